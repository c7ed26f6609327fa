// ESLint over the sources and the tests (npm test runs it): typescript-eslint's recommended rules.
// Unused arguments named with a leading underscore are part of an interface (a scheduler that
// ignores its state); tests may require() lazily (after the environment they check is set up).
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", "coverage/", ".venv/", "reports/", "fixtures/", "bin/", "**/*.js", "**/*.mjs", "**/*.cjs"] },
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrors: "none", ignoreRestSiblings: true }],
    },
  },
  { files: ["test/**/*.ts"], rules: { "@typescript-eslint/no-require-imports": "off" } },
  {
    // directives for rules this configuration does not enable (no-console) are harmless
    linterOptions: { reportUnusedDisableDirectives: "off" },
  },
);
