// The actor runtime's public surface: what pipeline modules import.
export {
  definePipeline, ROLES, STAGE_OF,
  type Fetched, type FetchedResponse, type FetchRequest, type FetcherSpec, type GeneratorSpec, type ExporterSpec,
  type Item, type JobContext, type ParamSpec, type PipelineDefinition, type ReadContext, type Role, type RoleOptions,
  type ScanContext, type ScanPage, type ScannerSpec, type Stage, type WriterSpec, type WriteTx,
} from './pipeline.ts';
export type { ActorState } from './lifecycle.ts';
export type { StageView } from './progress.ts';
