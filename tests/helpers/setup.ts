// Keep test output readable: the Temporal SDK logs every worker state change at INFO.
import { DefaultLogger, Runtime } from '@temporalio/worker';

Runtime.install({ logger: new DefaultLogger('WARN') });
