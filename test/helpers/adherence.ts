/**
 * Prompt adherence by pixel statistics, for shapes-sd (scripts/train_shapes_model.py): did the
 * image draw the asked foreground colour, background colour, shape and position?
 *
 * The drawing constants (colours, shapes, position anchors) and the held-out prompts come from the
 * model folder's prompts.json, which the training script writes; nothing here is a stored output.
 *
 * - every pixel is labelled with the nearest palette colour (Euclidean RGB); pixels farther than
 *   PURE from every palette colour (anti-aliased edges, mixtures) are left unlabelled;
 * - background: the most frequent label;
 * - foreground: the most frequent other label, if it covers at least MIN_FG pixels (else "none");
 * - the shape is the largest 4-connected region of pixels nearer the foreground colour than the
 *   background colour. An apex-up triangle has a quarter of its area in the top half of its
 *   bounding box, a circle or square half: top fraction below 3/8 reads as a triangle. Else the
 *   fill ratio (area / bounding-box area) parts circle (about pi / 4) from square (1): on 2000
 *   training drawings of each, read as this mask reads a clean drawing (coverage > 1/2), circles
 *   filled 0.70-0.90 and squares 1, so the cut is 0.95;
 * - position: the centre of the region's bounding box (the drawing's centre for every shape; a
 *   triangle's centroid sits a sixth of its height low), scaled to the training size, nearest anchor.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { RgbImage } from "../../src/pipeline/image";

export interface ShapesPrompt {
  readonly prompt: string;
  readonly colour: string;
  readonly shape: string;
  readonly background: string;
  readonly position: string;
}

export interface ShapesSpec {
  readonly size: number;
  readonly colours: Readonly<Record<string, readonly [number, number, number]>>;
  readonly shapes: readonly string[];
  readonly positions: Readonly<Record<string, readonly [number, number]>>;
  readonly held_out: readonly ShapesPrompt[];
}

export function readShapesSpec(modelDir: string): ShapesSpec {
  return JSON.parse(fs.readFileSync(path.join(modelDir, "prompts.json"), "utf8")) as ShapesSpec;
}

/** A pixel within this RGB distance of a palette colour counts as that colour. */
export const PURE = 60;
/** Fewer foreground pixels than this (of 32 x 32) is no shape at all. */
export const MIN_FG = 8;
export const TRIANGLE_TOP_BELOW = 0.375;
export const SQUARE_FILL_ABOVE = 0.95;

export interface Scored {
  readonly colour: string;
  readonly background: string;
  readonly shape: string;
  readonly position: string;
  readonly fill: number;
  /** share of the region in the top half of its bounding box */
  readonly top: number;
  readonly centroid: readonly [number, number];
}

export const ATTRIBUTES = ["colour", "background", "shape", "position"] as const;
export type Attribute = (typeof ATTRIBUTES)[number];

function dist2(r: number, g: number, b: number, c: readonly number[]): number {
  return (r - c[0]) ** 2 + (g - c[1]) ** 2 + (b - c[2]) ** 2;
}

export function scoreImage(img: RgbImage, spec: ShapesSpec): Scored {
  const names = Object.keys(spec.colours);
  const cols = names.map((n) => spec.colours[n]);
  const n = img.width * img.height;
  const label = new Int8Array(n).fill(-1);
  const counts = new Array<number>(names.length).fill(0);
  for (let i = 0; i < n; i++) {
    const r = img.data[3 * i],
      g = img.data[3 * i + 1],
      b = img.data[3 * i + 2];
    let best = -1,
      bestD = PURE * PURE;
    cols.forEach((c, k) => {
      const d = dist2(r, g, b, c);
      if (d <= bestD) {
        best = k;
        bestD = d;
      }
    });
    label[i] = best;
    if (best >= 0) counts[best]++;
  }
  const order = counts.map((c, k) => [c, k] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  const bg = order[0][1];
  const fgEntry = order[1];
  const none: Scored = { colour: "none", background: names[bg], shape: "none", position: "none", fill: 0, top: 0, centroid: [0, 0] };
  if (fgEntry === undefined || fgEntry[0] < MIN_FG * (n / (spec.size * spec.size))) return none;
  const fg = fgEntry[1];
  // pixels nearer the foreground colour than the background colour
  const mask = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const r = img.data[3 * i],
      g = img.data[3 * i + 1],
      b = img.data[3 * i + 2];
    mask[i] = dist2(r, g, b, cols[fg]) < dist2(r, g, b, cols[bg]) ? 1 : 0;
  }
  // largest 4-connected region
  const seen = new Uint8Array(n);
  let best: number[] = [];
  for (let s = 0; s < n; s++) {
    if (!mask[s] || seen[s]) continue;
    const region: number[] = [];
    const stack = [s];
    seen[s] = 1;
    while (stack.length > 0) {
      const i = stack.pop() as number;
      region.push(i);
      const x = i % img.width,
        y = (i - x) / img.width;
      for (const [dx, dy] of [
        [1, 0],
        [-1, 0],
        [0, 1],
        [0, -1],
      ]) {
        const nx = x + dx,
          ny = y + dy;
        if (nx < 0 || ny < 0 || nx >= img.width || ny >= img.height) continue;
        const j = ny * img.width + nx;
        if (mask[j] && !seen[j]) {
          seen[j] = 1;
          stack.push(j);
        }
      }
    }
    if (region.length > best.length) best = region;
  }
  let x0 = Infinity,
    x1 = -Infinity,
    y0 = Infinity,
    y1 = -Infinity;
  for (const i of best) {
    const x = i % img.width,
      y = (i - x) / img.width;
    x0 = Math.min(x0, x);
    x1 = Math.max(x1, x);
    y0 = Math.min(y0, y);
    y1 = Math.max(y1, y);
  }
  const fill = best.length / ((x1 - x0 + 1) * (y1 - y0 + 1));
  const mid = (y0 + y1 + 1) / 2; // pixel rows y0..y1 span [y0, y1 + 1)
  let top = 0;
  for (const i of best) {
    const y = Math.floor(i / img.width) + 0.5;
    top += y < mid ? 1 : y === mid ? 0.5 : 0;
  }
  top /= best.length;
  const shape = top < TRIANGLE_TOP_BELOW ? "triangle" : fill > SQUARE_FILL_ABOVE ? "square" : "circle";
  const cx = ((x0 + x1 + 1) / 2) * (spec.size / img.width),
    cy = ((y0 + y1 + 1) / 2) * (spec.size / img.height);
  let position = "none",
    bestP = Infinity;
  for (const [name, [ax, ay]] of Object.entries(spec.positions)) {
    const d = (cx - ax) ** 2 + (cy - ay) ** 2;
    if (d < bestP) {
      bestP = d;
      position = name;
    }
  }
  return { colour: names[fg], background: names[bg], shape, position, fill, top, centroid: [cx, cy] };
}

/** Fraction of prompts whose image shows each attribute as asked. */
export function accuracy(prompts: readonly ShapesPrompt[], scored: readonly Scored[]): Record<Attribute, number> {
  const out = {} as Record<Attribute, number>;
  for (const a of ATTRIBUTES) out[a] = prompts.filter((p, i) => scored[i][a] === p[a]).length / prompts.length;
  return out;
}

/**
 * The training script's drawing, in TypeScript (scripts/train_shapes_model.py draw(), 4 x 4
 * samples per pixel), with the jitter and size given: the scorer's own check on clean drawings.
 */
export function drawShape(spec: ShapesSpec, p: ShapesPrompt, side: number, dx: number, dy: number): RgbImage {
  const S = spec.size,
    ss = 4;
  const [ax, ay] = spec.positions[p.position];
  const cx = ax + dx,
    cy = ay + dy,
    h = side / 2;
  const data = new Uint8Array(S * S * 3);
  const fg = spec.colours[p.colour],
    bg = spec.colours[p.background];
  for (let py = 0; py < S; py++) {
    for (let px = 0; px < S; px++) {
      let cover = 0;
      for (let j = 0; j < ss; j++) {
        for (let i = 0; i < ss; i++) {
          const x = px + (i + 0.5) / ss,
            y = py + (j + 0.5) / ss;
          let inside: boolean;
          if (p.shape === "circle") inside = (x - cx) ** 2 + (y - cy) ** 2 <= h * h;
          else if (p.shape === "square") inside = Math.abs(x - cx) <= h && Math.abs(y - cy) <= h;
          else {
            const t = (y - (cy - h)) / (2 * h);
            inside = t >= 0 && t <= 1 && Math.abs(x - cx) <= h * t;
          }
          if (inside) cover++;
        }
      }
      const a = cover / (ss * ss);
      for (let c = 0; c < 3; c++) data[3 * (py * S + px) + c] = Math.round(bg[c] * (1 - a) + fg[c] * a);
    }
  }
  return { width: S, height: S, data };
}
