/**
 * The components a module reference set can hold calls of, in the order --localize runs them. Data
 * only, apart from localize.ts (which loads the runtime), so that reading or merging a report —
 * JSON alone — never loads a native binding.
 */
import type { ComponentKind } from "../../pipeline/onnx-model";

export const LOCALIZE_COMPONENTS: readonly ComponentKind[] = ["text_encoder", "unet", "vae_decoder", "vae_encoder"];
