/**
 * The committed fixtures themselves: every reference file matches its manifest hash and declared
 * shapes, the manifest carries its provenance, every ONNX model folder loads in onnxruntime-node
 * and runs with the shapes its configs promise, and the tokenizer table decodes back to its text.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { ReferenceSet } from "../src/conformance/reference-set";
import { StableDiffusionPipeline } from "../src/pipeline/pipeline";
import { f32 } from "../src/tensor/tensor";
import { ROOT, REFS } from "./helpers/fixtures";

const refs = ReferenceSet.open(REFS);

test("the manifest records provenance", () => {
  const m = refs.manifest;
  expect(m.format).toBe("sd-harness-references/1");
  expect(m.device).toBe("cpu");
  for (const lib of ["torch", "diffusers", "transformers", "numpy", "safetensors"]) expect(m.versions[lib]).toMatch(/^\d/);
  const scripts = (m as unknown as { scripts: Record<string, string> }).scripts;
  expect(Object.keys(scripts)).toContain("scripts/make_references.py");
  // the recorded script hashes are those of the committed scripts
  for (const [rel, sha] of Object.entries(scripts)) {
    const actual = crypto.createHash("sha256").update(fs.readFileSync(path.join(ROOT, rel))).digest("hex");
    expect(`${rel} ${actual}`).toBe(`${rel} ${sha}`);
  }
});

test("every case file matches its sha256 and declared tensor shapes", () => {
  expect(refs.cases.length).toBeGreaterThan(300);
  for (const c of refs.cases) {
    if (c.file.endsWith(".safetensors")) {
      const t = refs.tensors(c.id); // verifies the hash
      for (const name of Object.keys(c.tensors ?? {})) t.raw(name); // verifies the declared shape
    } else {
      refs.readVerified(c.id);
    }
  }
});

test("the tokenizer table decodes back to its prompts", () => {
  const vocab: Record<string, number> = JSON.parse(fs.readFileSync(path.join(ROOT, "fixtures/models/tiny-sd-onnx/tokenizer/vocab.json"), "utf8"));
  const byId = new Map(Object.entries(vocab).map(([k, v]) => [v, k]));
  // GPT-2 / CLIP byte-to-unicode table, inverted, to turn BPE tokens back into bytes
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
  const toByte = new Map(cs.map((c, i) => [String.fromCodePoint(c), bs[i]]));
  const corpus = refs.json<{ cases: { text: string; ids: number[] }[] }>("tokenizer:corpus");
  let checked = 0;
  for (const item of corpus.cases) {
    const ids = item.ids.filter((i) => i !== 49406 && i !== 49407);
    if (ids.length === 0 || ids.length >= 75) continue;
    const text = ids.map((i) => byId.get(i)!).join("").replace(/<\/w>/g, " ");
    const bytes = Buffer.from([...text].map((ch) => (ch === " " ? 32 : toByte.get(ch) ?? 63)));
    const decoded = bytes.toString("utf8").trim().replace(/\s+/g, " ");
    // CLIP lower-cases and normalises whitespace; compare letters and digits only
    const norm = (s: string) => s.toLowerCase().normalize("NFC").replace(/[^\p{L}\p{N}]/gu, "");
    if (norm(decoded) === norm(item.text)) checked++;
  }
  expect(checked).toBeGreaterThan(100);
});

const folders = ["tiny-sd-onnx", "tiny-sd-inpaint-onnx", "tiny-sd-fp16-onnx", "tiny-sd-int8-onnx"];

test.each(folders)("%s loads and runs with the shapes its configs promise", async (name) => {
  const pipe = await StableDiffusionPipeline.load(path.join(ROOT, "fixtures", "models", name), { threads: 1 });
  try {
    const { unetConfig: u, vaeConfig: v, textConfig: t } = pipe.folder;
    const ids = pipe.tokenize(["a test"]);
    const emb = await pipe.encodeIds([...ids, ...ids]);
    expect(emb.dims).toEqual([2, t.maxPositionEmbeddings, t.hiddenSize]);
    const s = u.sampleSize;
    const sample = f32(new Float32Array(2 * u.inChannels * s * s).fill(0.1), [2, u.inChannels, s, s]);
    const eps = await pipe.runUnet(sample, 500, emb);
    expect(eps.dims).toEqual([2, u.outChannels, s, s]);
    const img = await pipe.decodeLatents(f32(new Float32Array(v.latentChannels * s * s).fill(0.1), [1, v.latentChannels, s, s]));
    expect(img.dims).toEqual([1, 3, s * v.scaleFactor, s * v.scaleFactor]);
    const { mean, std } = await pipe.encodeImage(img);
    expect(mean.dims).toEqual([1, v.latentChannels, s, s]);
    expect(std.dims).toEqual(mean.dims);
    for (const x of [emb, eps, img, mean, std]) expect(x.data.every(Number.isFinite)).toBe(true);
  } finally {
    await pipe.release();
  }
});
