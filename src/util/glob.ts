/**
 * Case-id globs (`--only 'unet:*'`, tolerance overrides): `*` matches any run of characters, `?` any
 * one character, everything else itself, and the glob must cover the whole id. Matched by a
 * two-pointer scan that backtracks only to the last `*`, never through a regular expression: the
 * old translation to `^.*.*.*…$` backtracked exponentially (`--only '************#'` never
 * returned, and blocked the event loop so that SIGTERM went unanswered). Runs of `*` are collapsed,
 * and a glob with more literal characters than the id is refused at once, so a match costs at most
 * O(id length²) steps whatever the glob's length.
 */
export interface GlobMatcher {
  readonly glob: string;
  test(text: string): boolean;
}

export function compileGlob(glob: string): GlobMatcher {
  const pattern = glob.replace(/\*+/g, "*");
  let literals = 0;
  for (let k = 0; k < pattern.length; k++) if (pattern[k] !== "*") literals++;
  return { glob, test: (text: string) => literals <= text.length && wildcardMatch(pattern, text) };
}

/** Greedy wildcard matching: on a mismatch, let the last `*` swallow one more character. */
function wildcardMatch(p: string, t: string): boolean {
  let i = 0; // in t
  let j = 0; // in p
  let star = -1; // index of the last `*` seen in p
  let mark = 0; // where in t that `*` started matching
  while (i < t.length) {
    if (j < p.length && p[j] !== "*" && (p[j] === "?" || p[j] === t[i])) {
      i++;
      j++;
    } else if (j < p.length && p[j] === "*") {
      star = j++;
      mark = i;
    } else if (star >= 0) {
      j = star + 1;
      i = ++mark;
    } else {
      return false;
    }
  }
  while (j < p.length && p[j] === "*") j++;
  return j === p.length;
}
