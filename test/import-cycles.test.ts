/**
 * The module graph of src/ has no cycle, type-only imports included: each room imports only the
 * rooms below it (ARCHITECTURE.md, the arrows), and the conformance data model (types.ts) imports
 * no feature module. A cycle here is a design error even when it compiles (a type-import cycle
 * loads fine and still ties two modules together). Read with the TypeScript parser, no build.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ts from "typescript";

const SRC = path.join(__dirname, "..", "src");

function sources(dir: string, out: string[] = []): string[] {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) sources(p, out);
    else if (e.name.endsWith(".ts") && !e.name.endsWith(".d.ts")) out.push(p);
  }
  return out;
}

/** src-relative module → the src modules it imports or re-exports (type-only included) */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sources(SRC)) {
    const text = fs.readFileSync(file, "utf8");
    const sf = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, false);
    const deps: string[] = [];
    const add = (spec: string) => {
      if (!spec.startsWith(".")) return;
      const base = path.resolve(path.dirname(file), spec);
      const target = [`${base}.ts`, path.join(base, "index.ts")].find((p) => fs.existsSync(p));
      if (target) deps.push(path.relative(SRC, target));
    };
    const visit = (n: ts.Node): void => {
      if ((ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) && n.moduleSpecifier && ts.isStringLiteral(n.moduleSpecifier))
        add(n.moduleSpecifier.text);
      else if (
        ts.isCallExpression(n) &&
        n.arguments.length === 1 &&
        ts.isStringLiteral(n.arguments[0]) &&
        (n.expression.kind === ts.SyntaxKind.ImportKeyword || (ts.isIdentifier(n.expression) && n.expression.text === "require"))
      )
        add(n.arguments[0].text);
      else if (ts.isImportTypeNode(n) && ts.isLiteralTypeNode(n.argument) && ts.isStringLiteral(n.argument.literal))
        add(n.argument.literal.text);
      ts.forEachChild(n, visit);
    };
    visit(sf);
    graph.set(path.relative(SRC, file), deps);
  }
  return graph;
}

/** Strongly connected components with more than one module, or a module importing itself (Tarjan). */
function cycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const out: string[][] = [];
  const strong = (v: string): void => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) {
        strong(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(scc.sort());
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) strong(v);
  return out;
}

describe("the module graph of src/", () => {
  const graph = importGraph();

  test("reads every module and its imports", () => {
    expect(graph.size).toBeGreaterThan(100);
    expect(graph.get(path.join("conformance", "runner.ts"))).toContain(path.join("conformance", "types.ts"));
  });

  test("has no import cycle, type-only imports included", () => {
    expect(cycles(graph)).toEqual([]);
  });

  test("the conformance data model imports no conformance module", () => {
    const deps = graph.get(path.join("conformance", "types.ts")) ?? [];
    expect(deps.filter((d) => d.startsWith(`conformance${path.sep}`))).toEqual([]);
  });

  test("nothing outside src/cli/ imports src/cli/", () => {
    const wrong = [...graph].flatMap(([from, deps]) =>
      from.startsWith(`cli${path.sep}`) ? [] : deps.filter((d) => d.startsWith(`cli${path.sep}`)).map((d) => `${from} -> ${d}`),
    );
    expect(wrong).toEqual([]);
  });
});
