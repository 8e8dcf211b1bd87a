// Every workflow the worker registers.
export { lawgptPipeline } from './pipeline.js';
export { corpusUpload } from './corpus-upload.js';
