"""The job core: tables, the state machines and their one writer, job specs, tokens, queues, who may get which job,
submit, dispatch, pilot updates and kills. Imports nothing from the task side, workers, server, api or cli."""
