// The Fetcher's HTTP engine: what the Fetcher actor and users import.
export { HttpFetcher, type FetchRequest, type FetchResponse, type FetcherStats } from './http.ts';
export { fetcherDefaults, resolveFetcherOptions, type FetcherOptions, type RateLimit, type RateOptions, type ResolvedFetcherOptions } from './options.ts';
export { headersProvider, type HeadersProvider, type HeadersProviderOptions, type HeadersSource } from './headers.ts';
export { FetchError, parseRetryAfter, RETRY_STATUSES } from './retry.ts';
