"""What crosses from harvester to a pilot and back, through the queue's transport: the pilot's command line, token
and files (:mod:`harvester.handoff.pilots`), the job and reports in each pilot's directory
(:mod:`harvester.handoff.messenger`, read from a cycle's :mod:`harvester.handoff.snapshot`), the pilot's outbox
(:mod:`harvester.handoff.outbox`), and its inputs and outputs, verified (:mod:`harvester.handoff.staging`).
The agents use these; these use the transport, never the other way round."""
