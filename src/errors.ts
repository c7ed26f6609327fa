/**
 * The project's own error type. Everything a user can cause (bad flags, bad files, bad models)
 * surfaces as a HarnessError with a one-line message that names the file or flag, and an exit
 * code from ExitCode. Anything else escaping to the CLI is a bug and is reported as such.
 */
export const ExitCode = {
  ok: 0,
  /** conformance: at least one case failed */
  failed: 1,
  /** bad flags, or an input file / model folder / reference set that cannot be used */
  usage: 2,
  /** the output cannot be written (missing directory, read-only place, file exists) */
  output: 3,
  /** a NaN or Inf appeared during generation */
  numeric: 4,
  /**
   * conformance --localize (asked for by name) could not localize anything: every module comparison
   * was "not run" (the report is still written; its cases' verdict is in it)
   */
  localizeNotRun: 5,
  /** the --out folder is in use by another sd-harness run (its lock file names the process); try again when it ends */
  busy: 75,
  /** interrupted by SIGINT (128 + 2, as a shell reports a death by SIGINT) */
  interrupted: 130,
  /** stopped by SIGTERM (128 + 15); nothing partial is left, as for SIGINT */
  terminated: 143,
  /** an unexpected internal error (a bug) */
  internal: 70,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

export class HarnessError extends Error {
  readonly exitCode: ExitCodeValue;
  constructor(message: string, exitCode: ExitCodeValue = ExitCode.usage, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "HarnessError";
    this.exitCode = exitCode;
  }
}

export function inputError(message: string, cause?: unknown): HarnessError {
  return new HarnessError(message, ExitCode.usage, { cause });
}

/**
 * Text from elsewhere (a parser's message quoting file bytes, a runtime's message) made safe for a
 * one-line error: control characters (newlines, terminal escapes) are shown as \xNN and the text is
 * cut to `max` characters.
 */
export function oneLine(text: string, max = 200): string {
  // eslint-disable-next-line no-control-regex
  const s = text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

/** A mention of a library parameter inside an InvalidParameter message. */
export interface ParameterMention {
  readonly parameter: string;
}

/**
 * A library call's argument is out of range. The message names the library's parameter
 * (`numImagesPerPrompt: 0 must be an integer from 1 to 64`); `describe` respells every parameter the
 * message mentions, which is how the CLI speaks of its flags instead (cli/flags.ts) without the
 * library knowing them. The message is kept as parts, so text from elsewhere (a path) is never
 * mistaken for a parameter.
 */
export class InvalidParameter extends HarnessError {
  /** the parameter at fault, as the library spells it (GenerateParams' key) */
  readonly parameter: string;
  readonly parts: readonly (string | ParameterMention)[];
  constructor(parameter: string, parts: readonly (string | ParameterMention)[]) {
    super(
      InvalidParameter.render(parts, (p) => p),
      ExitCode.usage,
    );
    this.name = "InvalidParameter";
    this.parameter = parameter;
    this.parts = parts;
  }

  /** The message with each parameter it mentions spelled by `spell`. */
  describe(spell: (parameter: string) => string): string {
    return InvalidParameter.render(this.parts, spell);
  }

  private static render(parts: readonly (string | ParameterMention)[], spell: (parameter: string) => string): string {
    return parts.map((x) => (typeof x === "string" ? x : spell(x.parameter))).join("");
  }
}

/** `${param("width")}` inside an `invalid` template: a mention of a parameter. */
export const param = (parameter: string): ParameterMention => ({ parameter });

/**
 * InvalidParameter from a template: invalid("mask")`${param("mask")} needs ${param("initImage")}`. Values
 * made by param() are parameter mentions; everything else is text.
 */
export function invalid(parameter: string) {
  return (strings: TemplateStringsArray, ...values: unknown[]): InvalidParameter => {
    const parts: (string | ParameterMention)[] = [strings[0]];
    values.forEach((v, k) => {
      parts.push(typeof v === "object" && v !== null && "parameter" in v ? (v as ParameterMention) : String(v), strings[k + 1]);
    });
    return new InvalidParameter(parameter, parts);
  };
}

/** The common shape: "parameter: why". */
export function invalidParameter(parameter: string, why: string): InvalidParameter {
  return new InvalidParameter(parameter, [{ parameter }, `: ${why}`]);
}

function isErrorLike(e: unknown): e is Error {
  return typeof e === "object" && e !== null && typeof (e as Error).message === "string";
}

/** errno codes that mean the output cannot be written: exit 3; every other system error a user's environment causes is exit 2. */
const OUTPUT_ERRNOS = new Set(["ENOSPC", "EDQUOT", "EROFS", "EFBIG", "EIO"]);

/** What an errno says, in words; the code itself is printed beside it. */
const ERRNO_WORDS: Readonly<Record<string, string>> = {
  ENOSPC: "no space left on the device",
  EDQUOT: "disk quota exceeded",
  EROFS: "read-only file system",
  EFBIG: "file too large for the file system",
  EIO: "input/output error",
  ELOOP: "too many levels of symbolic links (a link loop)",
  EISDIR: "is a folder where a file was expected",
  ENOTDIR: "a part of the path is not a folder",
  ENOENT: "does not exist",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  ENXIO: "a FIFO or socket with nothing on the other end",
  ENAMETOOLONG: "name too long",
  EMFILE: "too many open files",
  ENFILE: "too many open files in the system",
  EEXIST: "already exists",
  EBUSY: "busy",
  ETXTBSY: "busy",
  ENODEV: "no such device",
  EINVAL: "not a usable file",
  // fs.cp's own codes (a model folder copied whole): what it found that it cannot copy
  ERR_FS_CP_FIFO_PIPE: "a FIFO, which cannot be copied",
  ERR_FS_CP_SOCKET: "a socket, which cannot be copied",
  ERR_FS_CP_UNKNOWN: "neither a file, a folder nor a link, so it cannot be copied",
  ERR_FS_CP_SYMLINK_TO_SUBDIRECTORY: "a link to a folder inside itself",
  ERR_FS_CP_EINVAL: "a folder cannot be copied into itself",
  ERR_FS_EISDIR: "is a folder where a file was expected",
};

/**
 * A system error (errno) that escaped the code that met it: an environment error, not a bug. It
 * becomes one line naming the path (and where a write without a path ran out of space, TMPDIR) with
 * exit 3 for an output that cannot be written and 2 otherwise. Anything that is not such an error: null.
 */
export function systemErrorToHarness(e: unknown, env: Readonly<Record<string, string | undefined>> = process.env): HarnessError | null {
  // duck-typed: an error from another realm (a vm context, a worker) is not `instanceof Error` here
  if (!isErrorLike(e)) return null;
  const err = e as NodeJS.ErrnoException & { dest?: string };
  const code = err.code;
  const known = typeof code === "string" && (/^E[A-Z0-9]+$/.test(code) || code in ERRNO_WORDS);
  if (!known || (typeof err.syscall !== "string" && err.path === undefined)) return null;
  const words = ERRNO_WORDS[code as string] ?? (err.message.replace(/^E[A-Z0-9]+:\s*/, "").split(",")[0] || code);
  const where =
    err.path !== undefined
      ? `${err.path}${err.dest !== undefined ? ` -> ${err.dest}` : ""}`
      : // a write through a descriptor names no file; where space runs out first is usually TMPDIR
        `${err.syscall ?? "a system call"}${code === "ENOSPC" || code === "EDQUOT" ? ` (the output folder or TMPDIR ${env.TMPDIR || "/tmp"})` : ""}`;
  return new HarnessError(
    oneLine(`${where}: ${words} (${code})`, 500),
    OUTPUT_ERRNOS.has(code as string) ? ExitCode.output : ExitCode.usage,
    { cause: e },
  );
}

/**
 * A package the CLI needs that is not in node_modules (an incomplete install): one line naming it
 * and how to install it. Anything else: null.
 */
export function missingPackageToHarness(e: unknown): HarnessError | null {
  const err = e as NodeJS.ErrnoException;
  if (!isErrorLike(e) || (err.code !== "MODULE_NOT_FOUND" && err.code !== "ERR_MODULE_NOT_FOUND")) return null;
  const m = /Cannot find (?:module|package) '([^']+)'/.exec(err.message);
  if (!m || m[1].startsWith(".") || m[1].startsWith("/")) return null;
  const parts = m[1].split("/");
  const pkg = m[1].startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
  return new HarnessError(
    `the dependency ${pkg} is not installed (node_modules/${pkg} is missing); run \`npm ci\` in the sd-harness checkout, or reinstall sd-harness`,
    ExitCode.usage,
    { cause: e },
  );
}
