/**
 * Replacing a file so that readers see the old contents or the new, never a part: write a temporary file beside it,
 * fsync, rename over. Shared by subnet.env (read by the CNI plugin while the daemon may rewrite it) and the CNI
 * plugin's saved configs (read back by DEL after a crash). Synchronous: the plugin is a one-shot process, and the
 * daemon writes subnet.env a handful of times in its life.
 */
import { closeSync, fchmodSync, fsyncSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/**
 * Writes `text` to `path` with exactly `mode` (the umask does not apply). The temporary file is dot-named, so a
 * directory listing that skips dot files never mistakes one for the real thing, and it is removed if the rename
 * fails.
 */
export function writeFileAtomic(path: string, text: string, mode: number): void {
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  const fd = openSync(temp, 'w', mode);
  try {
    writeFileSync(fd, text);
    fchmodSync(fd, mode);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(temp, { force: true });
    throw err;
  }
  closeSync(fd);
  try {
    renameSync(temp, path);
  } catch (err) {
    rmSync(temp, { force: true });
    throw err;
  }
}
