// Paths of the installed tools the tests and benchmarks start (exported by infra/test.sh and
// infra/bench.sh from infra/lib.sh).
function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests through 'npm test' (infra/test.sh)`);
  return value;
}

export const tools = {
  get python() {
    return required('LAWGPT_PYTHON');
  },
  get temporal() {
    return required('LAWGPT_TEMPORAL_BIN');
  },
  get minio() {
    return required('LAWGPT_MINIO_BIN');
  },
  get mc() {
    return required('LAWGPT_MC_BIN');
  },
  get chromium() {
    return required('LAWGPT_CHROMIUM_BIN');
  },
  get compose() {
    return required('LAWGPT_COMPOSE_BIN');
  },
  get hadolint() {
    return required('LAWGPT_HADOLINT_BIN');
  },
};
