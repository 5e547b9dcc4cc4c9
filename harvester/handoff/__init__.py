"""What crosses from harvester to a pilot and back, through the queue's transport: the pilot's command line, token
and files (:mod:`harvester.handoff.pilots`), the job, reports and outbox in each pilot's directory
(:mod:`harvester.handoff.messenger`), and its inputs and outputs, verified (:mod:`harvester.handoff.staging`).
The agents use these; these use the transport, never the other way round."""
