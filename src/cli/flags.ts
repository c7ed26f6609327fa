/**
 * The one place where the library's parameter names meet the CLI's flags: the library throws
 * InvalidParameter naming its own parameter (numImagesPerPrompt), and main() prints it with the
 * flag a CLI user typed (--batch).
 */
import { InvalidParameter } from "../errors";

/** GenerateParams key (and the scheduler factory's numInferenceSteps) -> `generate` flag. */
export const PARAMETER_FLAGS: Readonly<Record<string, string>> = {
  prompt: "--prompt",
  negativePrompt: "--negative-prompt",
  steps: "--steps",
  numInferenceSteps: "--steps",
  guidanceScale: "--guidance",
  scheduler: "--scheduler",
  numImagesPerPrompt: "--batch",
  width: "--width",
  height: "--height",
  initImage: "--init-image",
  mask: "--mask",
  strength: "--strength",
  clipSkip: "--clip-skip",
  eta: "--eta",
  sigmas: "--sigmas",
};

/** An error's message as the CLI prints it: library parameters spelled as flags. */
export function cliMessage(e: Error): string {
  return e instanceof InvalidParameter ? e.describe((p) => PARAMETER_FLAGS[p] ?? p) : e.message;
}
