/** JSON that round-trips bigints (our IP values), for talking to drivers running inside test namespaces. */
export function encodeJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? { $bigint: v.toString() } : v));
}

export function decodeJson(text: string): unknown {
  return JSON.parse(text, (_k, v: unknown) => {
    if (v && typeof v === 'object' && '$bigint' in v && typeof (v as { $bigint: unknown }).$bigint === 'string') {
      return BigInt((v as { $bigint: string }).$bigint);
    }
    return v;
  });
}
