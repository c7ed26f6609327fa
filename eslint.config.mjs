// ESLint over the sources and the tests (npm test runs it): typescript-eslint's recommended rules,
// and the type-checked rules about promises.
// Unused arguments named with a leading underscore are part of an interface (a scheduler that
// ignores its state); tests may require() lazily (after the environment they check is set up).
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", "coverage/", ".venv/", "reports/", "fixtures/", "bin/", "**/*.js", "**/*.mjs", "**/*.cjs"] },
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": [
        "error",
        { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrors: "none", ignoreRestSiblings: true },
      ],
    },
  },
  { files: ["test/**/*.ts"], rules: { "@typescript-eslint/no-require-imports": "off" } },
  {
    // Type-checked rules, for promises: one nobody awaits loses its rejection (an unhandled
    // rejection ends the process, or a failure goes unreported); an async function passed where a
    // void callback is expected (an event handler, forEach) does the same; `await` on a value that
    // is no promise hides a missing call; and `return p` inside try escapes its catch (and its
    // finally runs before p settles). Fire-and-forget is written `void p` with a comment saying
    // why. The program is tsconfig.check.json's: src and test together. Cost, measured on the
    // 2-core machine: `eslint src test` took 16 s of CPU without type information and 40 s with it;
    // limiting these rules to src still took 33 s (the program is most of it), so tests keep them.
    files: ["src/**/*.ts", "test/**/*.ts"],
    languageOptions: { parserOptions: { project: ["./tsconfig.check.json"], tsconfigRootDir: import.meta.dirname } },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/await-thenable": "error",
      "@typescript-eslint/return-await": ["error", "in-try-catch"],
    },
  },
  {
    // The arrows (ARCHITECTURE.md): only the CLI knows flags and its defaults, so nothing outside
    // src/cli/ imports from it; the library reads the package root and version from src/util/package.ts.
    files: ["src/**/*.ts"],
    ignores: ["src/cli/**"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            {
              group: ["**/cli", "**/cli/*", "**/cli/**"],
              message: "src/cli/ is the top room: the library may not import it (ARCHITECTURE.md, the arrows)",
            },
          ],
        },
      ],
    },
  },
  {
    // directives for rules this configuration does not enable (no-console) are harmless
    linterOptions: { reportUnusedDisableDirectives: "off" },
  },
);
