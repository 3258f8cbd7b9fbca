/**
 * SIGTERM/SIGINT abort the returned signal; after the first one the handlers are removed, so a second signal
 * kills the process with the default action (upstream's behaviour).
 */
export function abortOnSignals(onSignal: (name: NodeJS.Signals) => void): AbortController {
  const controller = new AbortController();
  const handler = (name: NodeJS.Signals): void => {
    process.off('SIGTERM', handler);
    process.off('SIGINT', handler);
    onSignal(name);
    controller.abort(new DOMException(`received ${name}`, 'AbortError'));
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  return controller;
}
