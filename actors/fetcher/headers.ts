import { codes, TroupeError } from '../../messages/errors.ts';

/**
 * Request headers shared by every request of a fetcher (an API token, a session cookie).
 * `get()` is called per request and should be cheap (cached); `refresh()` is called once
 * when a request is refused with 401/403, and its result is used for the retry.
 */
export interface HeadersSource {
  get(): Promise<Record<string, string>>;
  refresh?(): Promise<Record<string, string>>;
}

export interface HeadersProviderOptions {
  /** Refresh the headers in the background this often, ms. @default never */
  refreshEveryMs?: number;
  /** Told about a failed background refresh (the previous headers stay in use). @default console.error */
  onError?: (err: unknown) => void;
}

/** A {@link HeadersSource} with a timer to stop. */
export interface HeadersProvider extends HeadersSource {
  refresh(): Promise<Record<string, string>>;
  /** Stops the background refresh. Safe to call twice. */
  close(): void;
}

/**
 * Wraps a function that obtains headers (logs in, mints a token) into a shared source:
 * the headers are obtained once and the same frozen object is handed to every request;
 * concurrent refreshes share one call of `fetchHeaders`; a failed first load is not
 * cached (the next `get()` tries again); a failed background refresh keeps the old headers.
 */
export function headersProvider(
  fetchHeaders: () => Promise<Record<string, string>>,
  options: HeadersProviderOptions = {},
): HeadersProvider {
  let current: Promise<Readonly<Record<string, string>>> | undefined;
  let refreshing: Promise<Readonly<Record<string, string>>> | undefined;
  const onError = options.onError ?? ((err: unknown) => {
    console.error(`troupe: background refresh of the shared request headers failed: ${(err as Error)?.message ?? String(err)}`);
  });

  function refresh(): Promise<Record<string, string>> {
    refreshing ??= (async () => {
      try {
        const fresh = Object.freeze({ ...(await fetchHeaders()) });
        current = Promise.resolve(fresh);
        return fresh;
      } finally {
        refreshing = undefined;
      }
    })();
    return refreshing;
  }

  let timer: NodeJS.Timeout | undefined;
  const every = options.refreshEveryMs;
  if (every !== undefined) {
    if (!Number.isSafeInteger(every) || every < 1) throw new TroupeError(codes.BAD_OPTION, 'options.headersProvider.refreshEveryMs must be a positive integer');
    timer = setInterval(() => { refresh().catch(onError); }, every);
    timer.unref();
  }

  return {
    get() {
      return current ?? refresh();
    },
    refresh,
    close() {
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
    },
  };
}
