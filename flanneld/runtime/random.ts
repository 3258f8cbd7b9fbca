/** Chance is injected like time: tests pass a seeded generator and get repeatable picks. */
export interface Random {
  /** Uniform integer in [0, n). */
  int(n: number): number;
}

export const mathRandom: Random = { int: (n) => Math.floor(Math.random() * n) };

/** Small deterministic generator (mulberry32) for tests and reproducible runs. */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0;
  return {
    int(n) {
      state = (state + 0x6d2b79f5) >>> 0;
      let t = state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
    },
  };
}
