/**
 * The ONNX components of an SD 1.x model folder, in pipeline order: one list and its type. Each is
 * a folder of the model (`<component>/model.onnx`). Which stage runs which component is the stage
 * registry's `StageDef.components` (src/conformance/stages/); everything else derives from these two.
 */
export const COMPONENTS = ["text_encoder", "unet", "vae_decoder", "vae_encoder"] as const;

export type ComponentKind = (typeof COMPONENTS)[number];
