// The message plane's public surface: what actors, storage and users import.
export * from './errors.ts';
export { encode, decode } from './codec.ts';
export {
  ENVELOPE_VERSION, makeEnvelope, parseEnvelope, encodeEnvelope, decodeEnvelope, encodeFrameItem, frameContext, envelopeOfItem, inheritFrameContext,
  type Envelope, type EnvelopeInit,
} from './envelope.ts';
export { subjects, messageId, checkName, type Subjects } from './subjects.ts';
export { ensureTopology, deleteTopology, deadLetterStranded, stageConfig, stageDefaults, type StageConfig, type StageLimits } from './topology.ts';
export { WorkProducer, isStreamFull, type ProducerOptions, type PublishOptions } from './producer.ts';
export { WorkConsumer, type BatchHandler, type ConsumerOptions, type ConsumerStats, type DeadLetter, type Delivery, type Outcome } from './consumer.ts';
export { DEFAULT_MEMORY_LIMIT as NATS_MEMORY_LIMIT, defaultMaxProcs as natsMaxProcs, NatsServer, findNatsServer, freePort, type NatsServerOptions } from './server.ts';
export { openNats, CONNECTION_OPTIONS, type NatsHandle, type NatsOptions } from './connection.ts';
