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
    super(InvalidParameter.render(parts, (p) => p), ExitCode.usage);
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
