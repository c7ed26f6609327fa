/**
 * The CLI: main(argv) runs one command in-process and returns its exit code, so tests call it
 * directly; bin/sd-harness.js is a shim. Errors a user can cause print one line (the stack only
 * with --verbose) and exit with the codes in src/errors.ts.
 */
// first: telemetry off before anything can load onnxruntime-node
import "../util/telemetry-off";
import { HarnessError, ExitCode, oneLine, systemErrorToHarness, missingPackageToHarness } from "../errors";
import { cliMessage } from "./flags";
import { removePendingTemporaries } from "../util/atomic";
import { CliIO, processIO } from "./io";
import { VERSION } from "./defaults";

const COMMANDS: Record<string, { summary: string; load: () => Promise<(argv: string[], io: CliIO) => Promise<number>> }> = {
  generate: {
    summary: "generate images (txt2img, img2img, inpainting) with an SD 1.x ONNX folder",
    load: async () => {
      const m = await import("./commands/generate");
      return async (argv, io) => {
        const args = await m.generateParser(argv).parseAsync();
        if (args.help || args.version) return ExitCode.ok;
        return m.runGenerate(args as Record<string, unknown>, io, argv);
      };
    },
  },
  conformance: {
    summary: "check an ONNX port stage by stage against PyTorch reference tensors",
    load: async () => (await import("./commands/conformance")).conformanceCommand,
  },
  sensitivity: {
    summary: "perturb weights in a copy of the model: the smallest change the suite catches, per layer kind",
    load: async () => (await import("./commands/sensitivity")).sensitivityCommand,
  },
  report: {
    summary: "report merge: join sharded conformance reports",
    load: async () => (await import("./commands/report")).reportCommand,
  },
};

function usage(): string {
  const lines = [`sd-harness ${VERSION}: Stable Diffusion 1.x on onnxruntime-node, with a conformance suite`, "", "Commands:"];
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  sd-harness ${name.padEnd(12)} ${c.summary}`);
  lines.push("", "Run sd-harness <command> --help for its options.");
  return lines.join("\n") + "\n";
}

export async function main(argv: string[], io?: CliIO): Promise<number> {
  const controller = new AbortController();
  const ownIO = io ?? processIO(controller.signal);
  const verbose = argv.includes("--verbose");
  let interrupts = 0;
  // the first signal decides the exit status: 130 for SIGINT, 143 for SIGTERM (128 + its number)
  let stoppedBy: NodeJS.Signals | null = null;
  const stopCode = () => (stoppedBy === "SIGTERM" ? ExitCode.terminated : ExitCode.interrupted);
  const onSignal = (sig: NodeJS.Signals) => {
    interrupts++;
    stoppedBy ??= sig;
    controller.abort();
    removePendingTemporaries();
    if (interrupts > 1) {
      process.stderr.write(`sd-harness: ${sig} again, exiting now; no partial files left\n`);
      process.exit(stopCode());
    }
  };
  if (!io) {
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
  }
  try {
    const [cmd, ...rest] = argv;
    if (!cmd || cmd === "--help" || cmd === "-h" || cmd === "help") {
      ownIO.out(usage());
      return cmd ? ExitCode.ok : ExitCode.usage;
    }
    if (cmd === "--version") {
      ownIO.out(`${VERSION}\n`);
      return ExitCode.ok;
    }
    const entry = COMMANDS[cmd];
    if (!entry)
      throw new HarnessError(`unknown command ${JSON.stringify(cmd)}; commands: ${Object.keys(COMMANDS).join(", ")}`, ExitCode.usage);
    // yargs would take what follows a bare "--" as positional values and then complain about
    // something else (a "missing" --prompt that was given); these commands take no positionals
    if (cmd !== "report" && rest.includes("--")) {
      throw new HarnessError(
        `${cmd}: a bare "--" is not accepted (everything after it would be ignored); pass the flags without it`,
        ExitCode.usage,
      );
    }
    const run = await entry.load();
    return await run(rest, ownIO);
  } catch (caught) {
    // the user's environment, not a bug: a system error (a full disk, a link loop, a FIFO where a
    // file was expected) that escaped where it happened, or a dependency missing from node_modules
    const e = systemErrorToHarness(caught) ?? missingPackageToHarness(caught) ?? caught;
    if (
      controller.signal.aborted ||
      (e instanceof HarnessError && (e.exitCode === ExitCode.interrupted || e.exitCode === ExitCode.terminated))
    ) {
      removePendingTemporaries();
      ownIO.err(`sd-harness: ${stoppedBy === "SIGTERM" ? "terminated (SIGTERM)" : "interrupted"}; no partial output was written\n`);
      return stopCode();
    }
    if (e instanceof HarnessError) {
      ownIO.err(`sd-harness: error: ${oneLine(cliMessage(e), Infinity)}\n`);
      if (verbose && e.stack) ownIO.err(`${e.stack}\n`);
      return e.exitCode;
    }
    // yargs reports bad flags as plain Errors with a name of "YError"
    if (e instanceof Error && e.name === "YError") {
      ownIO.err(`sd-harness: error: ${e.message.split("\n")[0]}\n`);
      return ExitCode.usage;
    }
    ownIO.err(
      `sd-harness: internal error: ${oneLine(String((e as Error)?.message ?? e), Infinity)}${verbose ? "" : " (run with --verbose for the stack trace)"}\n`,
    );
    if (verbose && e instanceof Error && e.stack) ownIO.err(`${e.stack}\n`);
    return ExitCode.internal;
  } finally {
    if (!io) {
      // once a signal has decided the exit status, a second one that lands while the process winds
      // down (sessions released, streams flushed) exits with that status, not by its own default;
      // the late handlers go on before onSignal comes off, so no instant has none
      if (stoppedBy) {
        const late = () => process.exit(stopCode());
        process.on("SIGINT", late);
        process.on("SIGTERM", late);
      }
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    }
  }
}
