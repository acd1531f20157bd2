// Assembles src/chunker/gear.wat into src/chunker/gear-wasm.ts (npm run wasm).
import fs from 'node:fs';
import wabt from 'wabt';

const source = new URL('../src/chunker/gear.wat', import.meta.url);
const target = new URL('../src/chunker/gear-wasm.ts', import.meta.url);

export async function assemble() {
  const w = await wabt();
  const module = w.parseWat('gear.wat', fs.readFileSync(source, 'utf8'));
  try {
    return Buffer.from(module.toBinary({}).buffer);
  } finally {
    module.destroy();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const bytes = await assemble();
  fs.writeFileSync(
    target,
    `// Generated from gear.wat by \`npm run wasm\`: edit that, not this.\nexport const GEAR_WASM = '${bytes.toString('base64')}';\n`,
  );
  console.log(`${bytes.length} bytes written to src/chunker/gear-wasm.ts`);
}
