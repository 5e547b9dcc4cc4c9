ClusterId = 490
ProcId = 0
JobStatus = 4
ExitBySignal = false
ExitCode = 0
EnteredCurrentStatus = 1717150000
CompletionDate = 1717150000
MinipandaWorker = 30
MinipandaAccessPoint = "/scratch/harvester/workers/CONDOR_TEST/30"

ClusterId = 491
ProcId = 0
JobStatus = 4
ExitBySignal = false
ExitCode = 82
EnteredCurrentStatus = 1717150100
MinipandaWorker = 31
MinipandaAccessPoint = "/scratch/harvester/workers/CONDOR_TEST/31"

ClusterId = 492
ProcId = 0
JobStatus = 4
ExitBySignal = true
ExitSignal = 9
EnteredCurrentStatus = 1717150200
MinipandaWorker = 32
MinipandaAccessPoint = "/scratch/harvester/workers/CONDOR_TEST/32"

ClusterId = 493
ProcId = 0
JobStatus = 3
EnteredCurrentStatus = 1717150300
RemoveReason = "The job attribute PeriodicRemove expression 'JobStatus == 2 && time() - EnteredCurrentStatus > 4200' evaluated to TRUE"
MinipandaWorker = 33
MinipandaAccessPoint = "/scratch/harvester/workers/CONDOR_TEST/33"

ClusterId = 494
ProcId = 0
JobStatus = 4
ExitBySignal = false
ExitCode = 1
EnteredCurrentStatus = 1717150400
MinipandaWorker = 34
MinipandaAccessPoint = "/scratch/harvester/workers/CONDOR_TEST/34"
