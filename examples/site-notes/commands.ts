// What the site-notes stages send each other.

/** A page to fetch, with what the last crawl learnt (for conditional requests). */
export interface PageRef {
  url: string;
  epoch: number;
  etag?: string | null;
  lastModified?: string | null;
  hash?: string | null;
}

export type WriteCommand =
  | { kind: 'page'; url: string; epoch: number; httpStatus: string; title: string; markdown: string;
      headings: Array<{ level: number; text: string }>; links: string[]; bodyLinks: string[];
      etag: string | null; lastModified: string | null; hash: string }
  | { kind: 'unchanged'; url: string; epoch: number }
  | { kind: 'broken'; url: string; epoch: number; httpStatus: string }
  | { kind: 'skipped'; url: string; epoch: number; httpStatus: string }
  | { kind: 'render-note'; url: string }
  | { kind: 'render-site'; epoch: number };
