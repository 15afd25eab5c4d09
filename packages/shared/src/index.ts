export * from './constants.ts';
export * from './errors.ts';
export * from './protocol.ts';
export * from './config.ts';
export * from './spot.ts';
export * from './log-frames.ts';
export * from './verified-download.ts';
