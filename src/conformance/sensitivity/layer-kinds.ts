/**
 * Layer kinds of an SD 1.x ONNX export, for `sd-harness sensitivity`: which initializer is which
 * kind of weight, read from the exporter's names. Named initializers carry their module path
 * (`model.down_blocks.0.resnets.0.conv1.weight`; optimum drops the `model.` prefix); anonymous ones
 * (`onnx::MatMul_5643`: a Linear weight the exporter transposed; `onnx::Mul_5637` / `onnx::Add_5638`:
 * a GroupNorm's gamma / beta after it was split into InstanceNormalization, Mul and Add) are named
 * through the node that reads them, whose name is module-scoped
 * (`/model/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/MatMul`). An anonymous
 * tensor whose readers do not name one module is reported as unmapped, never guessed.
 */
import type { InitializerInfo } from "../../onnx/initializer-edit";
import type { ComponentKind } from "../../pipeline/components";

export interface LayerKind {
  /** stable id, matched by --only globs: `unet.attn1.q` */
  readonly id: string;
  readonly component: ComponentKind;
  readonly description: string;
  /** an attention projection: also perturbed by whole-tensor scales */
  readonly attention: boolean;
  /** covered by the target (+1 % of any single weight of an attention, resnet or norm layer is caught) */
  readonly target: boolean;
  /** the module path (without `model.`) of a weight of this kind, and its role */
  readonly match: (path: string, role: Role) => boolean;
}

export type Role = "weight" | "bias";

const W = (re: RegExp) => (p: string, role: Role) => role === "weight" && re.test(p);
const T = "transformer_blocks\\.\\d+\\.";

function attn(component: ComponentKind, prefix: string, which: "attn1" | "attn2" | null, base: string, desc: string): LayerKind[] {
  const proj: [string, string, string][] = [
    ["q", "to_q|query|q_proj", "query"],
    ["k", "to_k|key|k_proj", "key"],
    ["v", "to_v|value|v_proj", "value"],
    ["out", "to_out\\.0|proj_attn|out_proj", "output"],
  ];
  return proj.map(([short, names, what]) => ({
    id: `${prefix}.${short}`,
    component,
    description: `${desc} ${what} projection`,
    attention: true,
    target: true,
    match: W(new RegExp(`${base}\\.(?:${names})$`)),
  }));
}

/** Every kind, in the order the table lists them and the budget reaches them (targets first). */
export const LAYER_KINDS: readonly LayerKind[] = [
  ...attn("unet", "unet.attn1", "attn1", `${T}attn1`, "U-Net self-attention (attn1)"),
  ...attn("unet", "unet.attn2", "attn2", `${T}attn2`, "U-Net cross-attention (attn2)"),
  {
    id: "unet.resnet.conv",
    component: "unet",
    description: "U-Net resnet convolutions (conv1, conv2, conv_shortcut)",
    attention: false,
    target: true,
    match: W(/resnets\.\d+\.(?:conv1|conv2|conv_shortcut)$/),
  },
  {
    id: "unet.groupnorm",
    component: "unet",
    description: "U-Net GroupNorm weights (resnet norm1/norm2, attention norm, conv_norm_out)",
    attention: false,
    target: true,
    match: W(/(?:resnets\.\d+\.norm[12]|attentions\.\d+\.norm|^conv_norm_out)$/),
  },
  {
    id: "unet.layernorm",
    component: "unet",
    description: "U-Net transformer LayerNorm weights (norm1-3)",
    attention: false,
    target: true,
    match: W(new RegExp(`${T}norm[123]$`)),
  },
  {
    id: "unet.time_embedding",
    component: "unet",
    description: "U-Net time embedding MLP (time_embedding.linear_1/2)",
    attention: false,
    target: false,
    match: W(/^time_embedding\.linear_[12]$/),
  },
  {
    id: "unet.resnet.time_proj",
    component: "unet",
    description: "U-Net resnet time-embedding projections (time_emb_proj)",
    attention: false,
    target: false,
    match: W(/resnets\.\d+\.time_emb_proj$/),
  },
  {
    id: "unet.ff",
    component: "unet",
    description: "U-Net transformer feed-forward (GEGLU proj, net.2)",
    attention: false,
    target: false,
    match: W(new RegExp(`${T}ff\\.net\\.(?:0\\.proj|2)$`)),
  },
  ...attn("vae_decoder", "vae_decoder.attn", null, "attentions\\.\\d+", "VAE decoder mid-block attention"),
  {
    id: "vae_decoder.resnet.conv",
    component: "vae_decoder",
    description: "VAE decoder resnet convolutions",
    attention: false,
    target: true,
    match: W(/resnets\.\d+\.(?:conv1|conv2|conv_shortcut)$/),
  },
  {
    id: "vae_decoder.groupnorm",
    component: "vae_decoder",
    description: "VAE decoder GroupNorm weights",
    attention: false,
    target: true,
    match: W(/(?:resnets\.\d+\.norm[12]|attentions\.\d+\.group_norm|conv_norm_out)$/),
  },
  {
    id: "vae_decoder.conv",
    component: "vae_decoder",
    description: "VAE decoder other convolutions (conv_in, upsamplers, conv_out, post_quant_conv)",
    attention: false,
    target: false,
    match: W(/(?:conv_in|conv_out|upsamplers\.\d+\.conv|post_quant_conv)$/),
  },
  ...attn("vae_encoder", "vae_encoder.attn", null, "attentions\\.\\d+", "VAE encoder mid-block attention"),
  {
    id: "vae_encoder.resnet.conv",
    component: "vae_encoder",
    description: "VAE encoder resnet convolutions",
    attention: false,
    target: true,
    match: W(/resnets\.\d+\.(?:conv1|conv2|conv_shortcut)$/),
  },
  {
    id: "vae_encoder.groupnorm",
    component: "vae_encoder",
    description: "VAE encoder GroupNorm weights",
    attention: false,
    target: true,
    match: W(/(?:resnets\.\d+\.norm[12]|attentions\.\d+\.group_norm|conv_norm_out)$/),
  },
  {
    id: "vae_encoder.conv",
    component: "vae_encoder",
    description: "VAE encoder other convolutions (conv_in, downsamplers, conv_out, quant_conv)",
    attention: false,
    target: false,
    match: W(/(?:conv_in|conv_out|downsamplers\.\d+\.conv|quant_conv)$/),
  },
  ...attn("text_encoder", "text_encoder.attn", null, "self_attn", "text encoder self-attention"),
  {
    id: "text_encoder.mlp",
    component: "text_encoder",
    description: "text encoder MLP (fc1, fc2)",
    attention: false,
    target: true,
    match: W(/mlp\.fc[12]$/),
  },
  {
    id: "text_encoder.layernorm",
    component: "text_encoder",
    description: "text encoder LayerNorm weights (layer_norm1/2, final_layer_norm)",
    attention: false,
    target: true,
    match: W(/(?:layer_norm[12]|final_layer_norm)$/),
  },
];

/** A weight of a model part, named: its module path (dotted, without `model.`) and role, or why not. */
export interface MappedInitializer {
  readonly name: string;
  readonly component: ComponentKind;
  /** dotted module path, e.g. down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q; null when unmapped */
  readonly module: string | null;
  readonly role: Role | null;
  /** how the module was found: the initializer's own name, or the node that reads it */
  readonly via: "name" | "node" | null;
  readonly kind: string | null;
  /** where in the part: down / mid / up block, or other */
  readonly region: string | null;
  readonly count: number;
  readonly info: InitializerInfo;
}

/** Ops whose weight input is the given index, and what a constant there is. */
const ROLE_BY_OP: Readonly<Record<string, Readonly<Record<number, Role>>>> = {
  MatMul: { 1: "weight" },
  Gemm: { 1: "weight", 2: "bias" },
  Conv: { 1: "weight", 2: "bias" },
  // a GroupNorm split into InstanceNormalization, Mul (gamma), Add (beta); either input may be the constant
  Mul: { 0: "weight", 1: "weight" },
  Add: { 0: "bias", 1: "bias" },
  LayerNormalization: { 1: "weight", 2: "bias" },
  InstanceNormalization: { 1: "weight", 2: "bias" },
  GroupNormalization: { 1: "weight", 2: "bias" },
};

function stripModel(p: string): string {
  return p.replace(/^model\./, "");
}

/** `/model/down_blocks.0/attentions.0/.../to_q/MatMul` -> `down_blocks.0.attentions.0....to_q` (the scope, without the op). */
function moduleOfNode(node: string): string | null {
  const parts = node.split("/").filter((s) => s !== "");
  if (parts.length < 2) return null;
  return stripModel(parts.slice(0, -1).join("."));
}

function regionOf(module: string): string {
  const m = /(?:^|\.)(down_blocks|mid_block|up_blocks)(?:\.(\d+))?/.exec(module);
  if (!m) return "other";
  return m[1] === "mid_block" ? "mid" : `${m[1] === "down_blocks" ? "down" : "up"}${m[2] ?? ""}`;
}

/** A named initializer: `<module>.weight` / `<module>.bias` (VAE / text-encoder names keep their `encoder.` / `text_model.` scope). */
function fromName(name: string): { module: string; role: Role } | null {
  const m = /^(.+)\.(weight|bias)$/.exec(name);
  if (!m || name.includes("::")) return null;
  return { module: stripModel(m[1]), role: m[2] as Role };
}

function fromConsumers(info: InitializerInfo): { module: string; role: Role } | null {
  const found = new Set<string>();
  let role: Role | null = null;
  for (const use of info.consumers) {
    const r = ROLE_BY_OP[use.opType]?.[use.input];
    const module = moduleOfNode(use.node);
    if (!r || !module) return null;
    if (role && role !== r) return null;
    role = r;
    found.add(module);
  }
  if (found.size !== 1 || !role) return null;
  return { module: [...found][0], role };
}

/** Name every float initializer of a part with its module and kind (kind null: not one of LAYER_KINDS). */
export function mapInitializers(component: ComponentKind, infos: readonly InitializerInfo[]): MappedInitializer[] {
  const kinds = LAYER_KINDS.filter((k) => k.component === component);
  return infos
    .filter((i) => i.dataType === 1 || i.dataType === 10)
    .map((info) => {
      const byName = fromName(info.name);
      const byNode = byName ? null : fromConsumers(info);
      const hit = byName ?? byNode;
      const count = info.bytes?.count ?? 0;
      const kind = hit ? (kinds.find((k) => k.match(hit.module, hit.role))?.id ?? null) : null;
      return {
        name: info.name,
        component,
        module: hit?.module ?? null,
        role: hit?.role ?? null,
        via: byName ? "name" : byNode ? "node" : null,
        kind,
        region: hit ? regionOf(hit.module) : null,
        count,
        info,
      };
    });
}

/**
 * Anonymous float tensors the mapping could not name, with more than one value (single numbers are
 * the exporter's folded constants: attention scales, epsilons, shape arithmetic).
 */
export function unmapped(mapped: readonly MappedInitializer[]): MappedInitializer[] {
  return mapped.filter((m) => m.module === null && m.count > 1);
}
