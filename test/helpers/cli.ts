/** The CLI run in-process (main(argv, io)) with stdout and stderr captured. */
import { main } from "../../src/cli/main";
import { CliIO } from "../../src/cli/io";

export interface Run {
  code: number;
  out: string;
  err: string;
}

export async function cli(argv: string[]): Promise<Run> {
  let out = "";
  let err = "";
  const io: CliIO = {
    out: (t) => {
      out += t;
    },
    err: (t) => {
      err += t;
    },
    isTTY: false,
  };
  const code = await main(argv, io);
  return { code, out, err };
}
