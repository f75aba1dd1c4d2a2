//! `meshgate` command-line tool (feature `cli`; never part of the .wasm): commands, files and exit
//! status. The conversion itself is `meshgate::convert`.

use meshgate::convert::{self, options, Input};
use std::io::{Read, Write};
use std::process::ExitCode;

const VERSION: &str = env!("CARGO_PKG_VERSION");

const USAGE: &str = "\
usage: meshgate convert [OPTIONS] [FILES...|-]
       meshgate --version | --help";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("convert") => run_convert(&args[1..]),
        Some("--version" | "-V" | "version") => {
            println!("meshgate {VERSION}");
            ExitCode::SUCCESS
        }
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}\n\n{}", options::HELP);
            ExitCode::SUCCESS
        }
        Some(other) => usage_error(&format!("unknown command {other:?}")),
        None => usage_error("missing command"),
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("meshgate: {msg}\n{USAGE}\n(try `meshgate convert --help`)");
    ExitCode::from(2)
}

fn run_convert(args: &[String]) -> ExitCode {
    let parsed = match options::parse_args(args, VERSION) {
        Ok(options::Parsed::Help) => {
            println!("{}", options::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(options::Parsed::Run(p)) => p,
        Err(msg) => return usage_error(&msg),
    };
    let files = if parsed.files.is_empty() {
        vec!["-".to_string()]
    } else {
        parsed.files
    };
    let mut inputs = Vec::new();
    let mut stdin_used = false;
    for f in &files {
        let (label, read) = if f == "-" {
            if stdin_used {
                return usage_error("standard input (-) given twice");
            }
            stdin_used = true;
            let mut s = String::new();
            (
                "<stdin>".to_string(),
                std::io::stdin().read_to_string(&mut s).map(|_| s),
            )
        } else {
            (f.clone(), std::fs::read_to_string(f))
        };
        match read {
            Ok(text) => inputs.push(Input { label, text }),
            Err(e) => {
                eprintln!("meshgate: {label}: {e}");
                return ExitCode::from(2);
            }
        }
    }

    let outcome = convert::convert(&inputs, &parsed.options);
    let mut stderr = std::io::stderr().lock();
    for m in &outcome.messages {
        // A closed stderr is no reason to fail differently: the exit status tells.
        let _ = writeln!(stderr, "{m}");
    }
    if !outcome.stdout.is_empty() {
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = stdout
            .write_all(outcome.stdout.as_bytes())
            .and_then(|()| stdout.flush())
        {
            let _ = writeln!(stderr, "meshgate: writing standard output: {e}");
            return ExitCode::from(2);
        }
    }
    if outcome.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
