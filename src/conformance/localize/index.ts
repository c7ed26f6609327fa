/**
 * The localize room (`conformance --localize`): per-module drift inside each component, against a
 * module reference set (scripts/make_module_references.py) and per-module limits
 * (conformance/module-limits.json); the first module over its limit and the modules that
 * introduce the most drift (`localize.ts`). Which components it runs is `localize-components.ts`.
 * What it adds to report.json is the data model's (`../types.ts`, `LocalizeReport`).
 *
 * Imports go to the files themselves; this index is the room's surface for the CLI and the tests.
 */
export { ModuleReferences, loadModuleLimits, runLocalize } from "./localize";
export type { LocalizeReport, CallLocalization, ModuleDrift } from "../types";
