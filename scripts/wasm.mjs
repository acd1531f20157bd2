// Assembles src/chunker/gear.wat into src/chunker/gear-wasm.ts (npm run wasm).
// With --check, writes nothing and fails if gear-wasm.ts is not what gear.wat assembles to.
import fs from 'node:fs';
import wabt from 'wabt';

const source = new URL('../src/chunker/gear.wat', import.meta.url);
const target = new URL('../src/chunker/gear-wasm.ts', import.meta.url);

const w = await wabt();
const module = w.parseWat('gear.wat', fs.readFileSync(source, 'utf8'));
const bytes = Buffer.from(module.toBinary({}).buffer);
module.destroy();
const text = `// Generated from gear.wat by \`npm run wasm\`: edit that, not this.\nexport const GEAR_WASM = '${bytes.toString('base64')}';\n`;

if (process.argv.includes('--check')) {
  if (fs.readFileSync(target, 'utf8') !== text) {
    console.error('src/chunker/gear-wasm.ts is not what gear.wat assembles to: run npm run wasm');
    process.exit(1);
  }
} else {
  fs.writeFileSync(target, text);
  console.log(`${bytes.length} bytes written to src/chunker/gear-wasm.ts`);
}
