// Every workflow the worker registers.
export { lawgptPipeline } from './pipeline.js';
