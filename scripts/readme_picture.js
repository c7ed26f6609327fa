#!/usr/bin/env node
/**
 * The README's first picture: prompts drawn by the bundled shapes-sd through the TypeScript pipeline
 * with `generate`'s defaults (20 PNDM steps, the guidance of the folder's generation_config.json),
 * seed = the prompt's place in the list,
 * each 32 x 32 image scaled 4x (nearest neighbour, so the pixels are the model's), side by side.
 *
 *   npm run build && node scripts/readme_picture.js docs/shapes-sd.png "a red circle on a blue background" ...
 *
 * Refuses to replace an existing file unless --force is given.
 */
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { PNG } = require("pngjs");
const { StableDiffusionPipeline } = require("../dist/pipeline/pipeline");
const { readGenerationDefaults } = require("../dist/pipeline/model-folder");

const SCALE = 4;
const GAP = 4;

async function main(argv) {
  const force = argv.includes("--force");
  const [out, ...prompts] = argv.filter((a) => a !== "--force");
  if (!out || prompts.length === 0) {
    console.error("usage: node scripts/readme_picture.js OUT.png PROMPT... [--force]");
    return 2;
  }
  if (fs.existsSync(out) && !force) {
    console.error(`${out}: exists; --force replaces it`);
    return 3;
  }
  const model = path.join(__dirname, "..", "fixtures", "models", "shapes-sd-onnx");
  const pipe = await StableDiffusionPipeline.load(model, { threads: 1 });
  const images = [];
  try {
    const guidanceScale = readGenerationDefaults(model).guidanceScale;
    for (const [i, prompt] of prompts.entries()) images.push((await pipe.generate({ prompt, seed: i, guidanceScale })).images[0]);
  } finally {
    await pipe.release();
  }
  const w = images[0].width * SCALE;
  const h = images[0].height * SCALE;
  const png = new PNG({ width: images.length * w + (images.length - 1) * GAP, height: h });
  png.data.fill(255);
  images.forEach((img, k) => {
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const s = 3 * (Math.floor(y / SCALE) * img.width + Math.floor(x / SCALE));
        const d = 4 * (y * png.width + k * (w + GAP) + x);
        png.data[d] = img.data[s];
        png.data[d + 1] = img.data[s + 1];
        png.data[d + 2] = img.data[s + 2];
        png.data[d + 3] = 255;
      }
  });
  const tmp = `${out}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, PNG.sync.write(png));
  fs.renameSync(tmp, out);
  prompts.forEach((p, i) => console.log(`seed ${i}: ${p}`));
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    console.error(e instanceof Error ? e.message : String(e));
    process.exit(1);
  },
);
