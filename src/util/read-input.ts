/**
 * Reading a file a user handed us (a config, a tokenizer file, a PNG, a manifest, a report), bounded:
 * anything that is not a regular file is refused before a byte is read (/dev/zero made the JSON and
 * PNG readers allocate until std::bad_alloc; a FIFO blocked forever, in open() itself), and so is a
 * file over the size limit for its kind, so a parser never sees more than that.
 */
import * as fs from "node:fs";
import { HarnessError, ExitCode } from "../errors";

const MiB = 1024 * 1024;

/** Size limits per kind of input, each far above what a real file of that kind holds. */
export const INPUT_LIMITS = {
  /** model_index.json, config.json, scheduler_config.json, tokenizer_config.json: a few KB */
  config: 4 * MiB,
  /** vocab.json (CLIP's: 1.06 MB), merges.txt (0.52 MB) */
  tokenizer: 64 * MiB,
  /**
   * A PNG: the largest image the pipeline takes (8192 x 8192, 16-bit RGBA) stored uncompressed is
   * 512 MiB; a real photo is a few MB. 256 MiB keeps every 8-bit image of that size.
   */
  png: 256 * MiB,
  /** reference-set manifest.json (SD 1.5's: about 1 MB) and tolerance files */
  manifest: 64 * MiB,
  /** a conformance report.json (the bundled run: 0.6 MB) */
  report: 256 * MiB,
  /** a tensor file (.safetensors): Node's own limit for reading a file whole */
  tensor: 2048 * MiB - 1,
} as const;

function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return "a directory";
  if (st.isFIFO()) return "a FIFO";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  if (st.isSocket()) return "a socket";
  return "not a regular file";
}

function fmtBytes(n: number): string {
  return n % MiB === 0 ? `${n / MiB} MiB` : `${n} bytes`;
}

/**
 * The bytes of `file`, at most `maxBytes` of them. `what` names the input in messages ("the U-Net's
 * config"); `label` is how the file is named in them (default: its path; the CLI passes
 * "--init-image FILE"). Every failure is a one-line HarnessError (exit 2).
 */
export function readInputFile(file: string, what: string, maxBytes: number, label: string = file): Buffer {
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "error";
    throw new HarnessError(code === "ENOENT" ? `${label}: missing (${what})` : `${label}: cannot read ${what} (${code})`, ExitCode.usage, {
      cause: e,
    });
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new HarnessError(`${label}: ${kindOf(st)}, not a regular file (${what} must be a file)`, ExitCode.usage);
    if (st.size > maxBytes)
      throw new HarnessError(`${label}: ${st.size} bytes, over the ${fmtBytes(maxBytes)} limit for ${what}`, ExitCode.usage);
    // read to the end, but never past the limit, even if the file grows meanwhile
    let buf = Buffer.allocUnsafe(Math.min(st.size, maxBytes) + 1);
    let n = 0;
    for (;;) {
      if (n === buf.length) {
        if (n > maxBytes) throw new HarnessError(`${label}: over the ${fmtBytes(maxBytes)} limit for ${what}`, ExitCode.usage);
        const grown = Buffer.allocUnsafe(Math.min(2 * n, maxBytes + 1));
        buf.copy(grown);
        buf = grown;
      }
      let got: number;
      try {
        got = fs.readSync(fd, buf, n, buf.length - n, n);
      } catch (e) {
        throw new HarnessError(`${label}: cannot read ${what} (${(e as NodeJS.ErrnoException).code ?? "error"})`, ExitCode.usage, {
          cause: e,
        });
      }
      if (got === 0) break;
      n += got;
    }
    return buf.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}

/** readInputFile as UTF-8 text. */
export function readInputText(file: string, what: string, maxBytes: number, label: string = file): string {
  return readInputFile(file, what, maxBytes, label).toString("utf8");
}
