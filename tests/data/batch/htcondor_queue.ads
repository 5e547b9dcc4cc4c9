ClusterId = 501
ProcId = 0
JobStatus = 1
EnteredCurrentStatus = 1717160000
JobBatchName = "harvester-41"
MinipandaWorker = 41
MinipandaAccessPoint = "/scratch/harvester/workers/CONDOR_TEST/41"
Iwd = "/scratch/harvester/workers/CONDOR_TEST/41"
RequestCpus = 1
RequestMemory = 2000

ClusterId = 502
ProcId = 0
JobStatus = 2
EnteredCurrentStatus = 1717160100
JobBatchName = "harvester-42"
MinipandaWorker = 42
MinipandaAccessPoint = "/scratch/harvester/workers/CONDOR_TEST/42"
RemoteHost = "slot1_3@node12.example.org"

ClusterId = 503
ProcId = 0
JobStatus = 5
EnteredCurrentStatus = 1717163000
HoldReason = "Error from slot1_2@node08.example.org: Job has gone over cgroup memory limit of 2000 megabytes. Last measured usage: 2011 megabytes.  Consider resubmitting with a higher request_memory."
HoldReasonCode = 34
HoldReasonSubCode = 0
MinipandaWorker = 43
MinipandaAccessPoint = "/scratch/harvester/workers/CONDOR_TEST/43"

ClusterId = 504
ProcId = 0
JobStatus = 5
EnteredCurrentStatus = 1717150000
HoldReason = "Error from slot1_1@node09.example.org: Failed to execute '/scratch/harvester/workers/CONDOR_TEST/44/job.sh': (errno=13: 'Permission denied')"
HoldReasonCode = 6
HoldReasonSubCode = 13
MinipandaWorker = 44
MinipandaAccessPoint = "/scratch/harvester/workers/CONDOR_TEST/44"

ClusterId = 505
ProcId = 0
JobStatus = 6
EnteredCurrentStatus = 1717164000
MinipandaWorker = 45
MinipandaAccessPoint = "/scratch/harvester/workers/CONDOR_TEST/45"

ClusterId = 506
ProcId = 0
JobStatus = 7
EnteredCurrentStatus = 1717164100
MinipandaWorker = 46
MinipandaAccessPoint = "/scratch/harvester/workers/CONDOR_TEST/46"

ClusterId = 507
ProcId = 0
JobStatus = 3
EnteredCurrentStatus = 1717164200
RemoveReason = "via condor_rm (by user pilot)"
MinipandaWorker = 47
MinipandaAccessPoint = "/scratch/harvester/workers/CONDOR_TEST/47"
