// Drives the system Chromium (Debian package) for meshgate's SSO end-to-end tests through playwright-core.
// Protocol: one JSON command per line on stdin, one JSON answer per line on stdout ({"id", "ok", ...} or
// {"id", "ok": false, "error"}). Every command is bounded by its own timeout; the Python side
// (tests/e2e/browser.py) bounds every wait as well. Nothing here reads outside this directory.
import { chromium } from 'playwright-core';
import readline from 'node:readline';

let browser = null;
const contexts = new Map(); // name -> {context, page}

function out(msg) {
  process.stdout.write(JSON.stringify(msg) + '\n');
}

function page(name) {
  const c = contexts.get(name);
  if (!c) throw new Error(`no browser context ${JSON.stringify(name)}`);
  return c.page;
}

async function answer(cmd) {
  const t = cmd.timeout ?? 20000;
  switch (cmd.op) {
    case 'launch': {
      browser = await chromium.launch({
        executablePath: cmd.executable,
        headless: true,
        args: cmd.args ?? [],
        timeout: t,
      });
      return { version: browser.version() };
    }
    case 'context': {
      const context = await browser.newContext({ acceptDownloads: false, viewport: { width: 1000, height: 800 } });
      const p = await context.newPage();
      p.setDefaultTimeout(t);
      p.setDefaultNavigationTimeout(t);
      contexts.set(cmd.name, { context, page: p });
      return {};
    }
    case 'close_context': {
      const c = contexts.get(cmd.name);
      if (c) await c.context.close();
      contexts.delete(cmd.name);
      return {};
    }
    case 'goto': {
      const resp = await page(cmd.ctx).goto(cmd.url, { waitUntil: 'load', timeout: t });
      return await state(cmd.ctx, resp);
    }
    case 'reload': {
      const resp = await page(cmd.ctx).reload({ waitUntil: 'load', timeout: t });
      return await state(cmd.ctx, resp);
    }
    case 'fill': {
      await page(cmd.ctx).fill(cmd.selector, cmd.value, { timeout: t });
      return {};
    }
    case 'submit': {
      // Click and wait for the navigation it starts (redirects included) to load.
      const p = page(cmd.ctx);
      const [resp] = await Promise.all([
        p.waitForNavigation({ waitUntil: 'load', timeout: t }),
        p.click(cmd.selector, { timeout: t }),
      ]);
      return await state(cmd.ctx, resp);
    }
    case 'exists': {
      return { count: await page(cmd.ctx).locator(cmd.selector).count() };
    }
    case 'evaluate': {
      return { value: await page(cmd.ctx).evaluate(cmd.expression) };
    }
    case 'cookies': {
      return { cookies: await contexts.get(cmd.ctx).context.cookies() };
    }
    case 'set_cookies': {
      const c = contexts.get(cmd.ctx).context;
      if (cmd.clear) await c.clearCookies();
      await c.addCookies(cmd.cookies);
      return {};
    }
    case 'screenshot': {
      await page(cmd.ctx).screenshot({ path: cmd.path, fullPage: true, timeout: t });
      return {};
    }
    case 'close': {
      for (const c of contexts.values()) await c.context.close().catch(() => {});
      contexts.clear();
      if (browser) await browser.close();
      browser = null;
      return {};
    }
    default:
      throw new Error(`unknown op ${JSON.stringify(cmd.op)}`);
  }
}

async function state(ctx, resp) {
  const p = page(ctx);
  return {
    status: resp ? resp.status() : null,
    url: p.url(),
    title: await p.title(),
    text: (await p.locator('body').innerText({ timeout: 5000 }).catch(() => '')).slice(0, 20000),
  };
}

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    out({ id: null, ok: false, error: `bad command: ${e.message}` });
    continue;
  }
  try {
    out({ id: cmd.id, ok: true, ...(await answer(cmd)) });
  } catch (e) {
    out({ id: cmd.id, ok: false, error: String(e && e.message ? e.message : e).slice(0, 4000) });
  }
  if (cmd.op === 'close') break;
}
if (browser) await browser.close().catch(() => {});
process.exit(0);
