// tsc keeps the shebang but not the executable bit; npm bin links need it for direct execution.
import { chmodSync } from 'node:fs';
for (const bin of ['dist/flanneld/main.js']) chmodSync(bin, 0o755);
