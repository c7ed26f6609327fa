/** Where the CLI writes: the process's streams by default, buffers in tests. */
export interface CliIO {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  /** true when stderr is a terminal (progress bar) */
  readonly isTTY: boolean;
  readonly signal?: AbortSignal;
}

let streamsGuarded = false;

/**
 * A reader that went away must not turn into a crash or another exit code: `generate ... | true`
 * closed stdout after the PNG was written, and the EPIPE error event killed the process with a
 * stack trace and exit 1; a closed stderr made conformance exit 1, its "a case failed" code. Write
 * errors on the standard streams are dropped: the files are the output, the streams only report.
 */
function guardStandardStreams(): void {
  if (streamsGuarded) return;
  streamsGuarded = true;
  for (const stream of [process.stdout, process.stderr]) stream.on("error", () => {});
}

export function processIO(signal?: AbortSignal): CliIO {
  guardStandardStreams();
  return {
    out: (t) => process.stdout.write(t),
    err: (t) => process.stderr.write(t),
    isTTY: Boolean(process.stderr.isTTY),
    signal,
  };
}

/** A progress reporter: a redrawn bar with it/s on a terminal, plain lines otherwise. */
export function progress(
  io: CliIO,
  label: string,
  total: number,
  start = process.hrtime.bigint(),
): { tick: (done: number) => void; end: () => void } {
  let lastLine = 0;
  const rate = (done: number) => {
    const s = Number(process.hrtime.bigint() - start) / 1e9;
    return s > 0 ? done / s : 0;
  };
  return {
    tick(done: number) {
      const r = rate(done);
      if (io.isTTY) {
        const width = 24;
        const fill = Math.round((done / total) * width);
        io.err(`\r${label} [${"#".repeat(fill)}${"-".repeat(width - fill)}] ${done}/${total} ${r.toFixed(2)} it/s`);
      } else if (done === total || done - lastLine >= Math.max(1, Math.floor(total / 10))) {
        lastLine = done;
        io.err(`${label} ${done}/${total} (${r.toFixed(2)} it/s)\n`);
      }
    },
    end() {
      if (io.isTTY) io.err("\n");
    },
  };
}
