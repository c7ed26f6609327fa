/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: "<rootDir>/test/helpers/node-env.js",
  roots: ["<rootDir>/test"],
  testPathIgnorePatterns: ["/helpers/"],
  transform: { "^.+\\.ts$": ["@swc/jest"] },
  testTimeout: 120000,
};
