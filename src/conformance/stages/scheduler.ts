/**
 * scheduler: a recorded trace replayed two ways with the recorded model outputs: teacher-forced
 * (each step from the reference sample: the scheduler's own error, judged) and free-running (our
 * own samples: how 1-ulp differences accumulate, plotted). Stochastic schedulers draw from a
 * generator seeded like the trace, after the initial-noise draw the trace made.
 */
import { numel } from "../../tensor/tensor";
import { TorchGenerator } from "../../rng/torch-generator";
import { createScheduler, parseSchedulerConfig } from "../../schedulers";
import { tensorMetrics } from "../judge/metrics";
import { TensorMetrics } from "../types";
import { COST } from "./types";
import { caseMeta, MODEL_FREE, ownStage, stepSlice } from "./common";

/** scripts/refgen's scheduler trace: the diffusers class and config, steps, the dummy model's sample shape and seed. */
interface TraceMeta {
  readonly class_name: string;
  readonly config: Readonly<Record<string, unknown>>;
  readonly steps: number;
  readonly seed: number;
  readonly shape: readonly number[];
  readonly step_kwargs?: { readonly eta?: number };
}

export const scheduler = ownStage({
  kind: "scheduler",
  cost: () => COST.small,
  async run(ctx, c) {
    const meta = caseMeta<TraceMeta>(ctx.refs, c.refId);
    const t = ctx.refs.tensors(c.refId);
    const config = parseSchedulerConfig({ ...meta.config, _class_name: meta.class_name }, `${c.refId} config`);
    const make = () => createScheduler(meta.class_name, config, meta.steps, { eta: meta.step_kwargs?.eta ?? 0 });
    const shape = meta.shape;
    const samples = t.f32("samples");
    const outputs = t.f32("model_outputs");
    const timestepsRef = t.f32("timesteps");
    // Our own schedule decides how many steps there are: a schedule of another length is a failure
    // with a named metric (scheduleLengthDiff), never an index out of range.
    const ourLength = make().timesteps.length;
    const lengthDiff = Math.abs(ourLength - timestepsRef.data.length);
    const n = Math.min(outputs.dims[0], ourLength);
    const per = numel(shape);
    const run = (teacher: boolean) => {
      const s = make();
      const gen = new TorchGenerator(BigInt(meta.seed));
      gen.randn(shape);
      const state = s.initialState();
      let sample: Float32Array = Float32Array.from(stepSlice(samples, 0));
      const out = new Float32Array(n * per);
      const series: number[] = [];
      for (let k = 0; k < n; k++) {
        const input = teacher ? Float32Array.from(stepSlice(samples, k)) : sample;
        sample = s.step(Float32Array.from(stepSlice(outputs, k)), k, input, state, gen, shape).prevSample;
        out.set(sample, k * per);
        series.push(tensorMetrics(sample, stepSlice(samples, k + 1), shape).relL2);
      }
      return { s, out, series };
    };
    const teacher = run(true);
    const free = run(false);
    const ref = samples.data.subarray(per, (n + 1) * per);
    const metrics: Record<string, TensorMetrics> = { prev_samples: tensorMetrics(teacher.out, ref, [n, ...shape], true) };
    if (lengthDiff === 0) metrics.timesteps = tensorMetrics(teacher.s.timesteps, timestepsRef.data, timestepsRef.dims, true);
    return {
      metrics,
      extra: { scheduleLengthDiff: lengthDiff },
      series: [{ name: "free-running prev_sample", metric: "relL2", values: free.series }],
      message: lengthDiff
        ? `our schedule has ${ourLength} timesteps, the reference ${timestepsRef.data.length}; the first ${n} steps compared`
        : `free-running final relL2 ${free.series[free.series.length - 1]?.toExponential(2)}`,
    };
  },
  against: MODEL_FREE,
  components: [],
  float64Floor: false,
  coverage: (meta) => ({ scheduler: typeof meta.class_name === "string" ? meta.class_name : undefined }),
  displayRank: 3,
});
