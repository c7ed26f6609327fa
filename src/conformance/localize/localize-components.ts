/**
 * The components a module reference set can hold calls of, in the order --localize runs them. Data
 * only, apart from localize.ts (which loads the runtime), so that reading or merging a report —
 * JSON alone — never loads a native binding.
 */
import { COMPONENTS, ComponentKind } from "../../pipeline/components";

/** every component, in pipeline order (src/pipeline/components.ts) */
export const LOCALIZE_COMPONENTS: readonly ComponentKind[] = COMPONENTS;
