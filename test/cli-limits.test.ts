/**
 * --atol / --max-rel-l2 CASE_GLOB=VALUE: limits from the command line become overrides after the
 * tolerance file's own, with the flag as their reason, and change the tolerance hash a report
 * records (so shards run with other flags are not merged).
 */
import { parseLimitFlag, withCommandLineLimits } from "../src/conformance/judge/cli-limits";
import { loadTolerances, resolve, toleranceSha256 } from "../src/conformance/judge/tolerances";
import { HarnessError } from "../src/errors";

const file = loadTolerances();

test("a flag's limit applies to the cases its glob matches, with the flag as the reason", () => {
  const t = withCommandLineLimits(file, { "max-rel-l2": ["unet:*=1e-3"], atol: ["vae_decode:64x64=0.002"] });
  const unet = resolve(t, "fp32", "unet", "unet:txt2img-pndm-64x64-step00", "m");
  expect(unet.limits.relL2).toBe(1e-3);
  expect(unet.limits.cosine).toBe(resolve(file, "fp32", "unet", "unet:txt2img-pndm-64x64-step00", "m").limits.cosine);
  expect(unet.reason).toBe("command line: --max-rel-l2 unet:*=0.001");
  expect(resolve(t, "fp32", "vae_decode", "vae_decode:64x64", "m").limits.maxAbs).toBe(0.002);
  // other cases keep the file's limits
  expect(resolve(t, "fp32", "vae_decode", "vae_decode:128x64", "m")).toEqual(resolve(file, "fp32", "vae_decode", "vae_decode:128x64", "m"));
});

test("command-line limits come after the file's overrides, and change the recorded hash", () => {
  const id = "scheduler:euler-a-cos-linspace-v-10";
  expect(resolve(file, "fp32", "scheduler", id, "m").limits.relL2).toBe(1e-3); // the file's own override
  const t = withCommandLineLimits(file, { "max-rel-l2": ["scheduler:*=2e-3"] });
  expect(resolve(t, "fp32", "scheduler", id, "m").limits.relL2).toBe(2e-3);
  expect(toleranceSha256(t)).not.toBe(toleranceSha256(file));
  expect(withCommandLineLimits(file, {})).toBe(file);
});

test.each(["unet", "unet:*=", "=1e-3", "unet:*=abc", "unet:*=-1", "unet:*=Infinity"])("%j is refused in one line", (text) => {
  expect(() => parseLimitFlag("max-rel-l2", text)).toThrow(HarnessError);
});
