// A small OpenAPI document shaped as the management API writes its settings
// (utoipa, OpenAPI 3.1: an unset setting is `null`; durations and the keep-alive
// policy are components, referenced with the setting's description beside the
// reference), for the settings and validation tests.

import type { OpenApiDocument } from '../src/settings';

export const DOCUMENT: OpenApiDocument = {
  components: {
    schemas: {
      HumanDuration: {
        type: 'string',
        pattern: '^(0|([0-9]+(ms|s|m|h))+)$',
        examples: ['30s'],
        description: 'A duration: whole numbers each followed by ms, s, m or h',
      },
      KeepAlive: { type: 'string', enum: ['fixed', 'histogram'] },
      ServiceSettings: {
        type: 'object',
        properties: {
          min_scale: {
            type: ['integer', 'null'],
            format: 'int32',
            minimum: 0,
            default: 0,
            description: 'Fewest instances; 0 lets the service scale to zero. Default 0.',
          },
          max_scale: {
            type: ['integer', 'null'],
            format: 'int32',
            minimum: 1,
            default: 10,
            description: 'Most instances, at least 1. Default 10 (or the minimum, if that is higher).',
          },
          target_concurrency: {
            type: ['integer', 'null'],
            minimum: 1,
            default: 70,
            description: 'Requests in flight per instance that the autoscaler aims for, at least 1.\nDefault 70.',
          },
          stable_window: {
            oneOf: [
              { type: 'null' },
              {
                $ref: '#/components/schemas/HumanDuration',
                description: 'How far back the autoscaler averages load, 1s to 1h, e.g. "60s". Default: the platform\'s.',
              },
            ],
          },
          keep_alive: {
            oneOf: [
              { type: 'null' },
              {
                $ref: '#/components/schemas/KeepAlive',
                description: 'How the last instance is kept once traffic stops. Default histogram.',
              },
            ],
            default: 'histogram',
          },
          keep_alive_percentile: {
            type: ['integer', 'null'],
            minimum: 50,
            maximum: 100,
            default: 99,
            description: 'With the histogram policy: the percentile of idle time until which the instance is kept.',
          },
        },
      },
    },
  },
};
