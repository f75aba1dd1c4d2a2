import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
const wasi = new WASI({ version: 'preview1', args: ['x', process.argv[3] || '3500'], env: {} });
const wasm = await WebAssembly.compile(await readFile(process.argv[2]));
const inst = await WebAssembly.instantiate(wasm, wasi.getImportObject());
wasi.start(inst);
