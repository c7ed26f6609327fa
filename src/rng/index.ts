/** Torch-compatible CPU random numbers: the MT19937 engine and `torch.randn` on top of it. */
export { MT19937, normalizeSeed } from "./mt19937";
export { TorchGenerator, fmaF32 } from "./torch-generator";
export type { NormalKernel, TorchGeneratorOptions, TorchGeneratorState } from "./torch-generator";
