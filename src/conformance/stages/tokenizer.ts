/** tokenizer: the CLIP tokenizer's ids for a corpus of prompts (tokenizer/corpus.json), all equal or the first mismatch. */
import { COST } from "./types";
import { MODEL_FREE, ownStage } from "./common";

interface Corpus {
  readonly cases: readonly { readonly text: string; readonly ids: readonly number[]; readonly untruncated_ids?: readonly number[] }[];
}

export const tokenizer = ownStage({
  kind: "tokenizer",
  readsTensors: false,
  cost: () => COST.small,
  async run(ctx, c) {
    const corpus = ctx.refs.json<Corpus>(c.refId);
    let mismatches = 0;
    let first = "";
    for (const item of corpus.cases) {
      const ours = ctx.pipe.tokenizer.tokenize(item.text, item.ids.length);
      const same = ours.ids.length === item.ids.length && ours.ids.every((v, i) => v === item.ids[i]);
      if (!same) {
        mismatches++;
        if (!first) first = `first mismatch: ${JSON.stringify(item.text).slice(0, 60)}`;
      }
    }
    return {
      metrics: {},
      extra: { mismatches, prompts: corpus.cases.length },
      message: first || `${corpus.cases.length} prompts, all ids equal`,
    };
  },
  against: MODEL_FREE,
  components: [],
  float64Floor: false,
  displayRank: 0,
});
