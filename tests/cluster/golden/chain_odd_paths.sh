#!/bin/bash
# The lwroi job chain for /clusters/it's a "dir" with $pace/work/configs/demo.yaml: run directory /clusters/it's a "dir" with $pace/runs/demo out, logs in /clusters/it's a "dir" with $pace/runs/demo out/slurm.
# Printed by `lwroi submit --dry-run`; `lwroi submit` also creates the run directory and log folder.
set -euo pipefail
extract_job=$(sbatch --parsable \
    '--chdir=/clusters/it'"'"'s a "dir" with $pace/work' \
    --partition=gpu \
    '--account=proj 42' \
    --qos=normal \
    '--comment=a b' \
    '--export=ALL,LWROI_MODULES=apptainer/1.3 openmpi' \
    '--output=/clusters/it'"'"'s a "dir" with $pace/runs/demo out/slurm/lwroi-extract-%j.out' \
    --nodes=1 \
    --ntasks=2 \
    --cpus-per-task=4 \
    --gpus-per-task=1 \
    --time=02:00:00 \
    '/clusters/it'"'"'s a "dir" with $pace/slurm/lwroi-extract.sbatch' \
    --mpi=pmi2 --cpus-per-task=4 --cpu-bind=cores apptainer exec --nv --env 'NOTE=x y' --bind '/clusters/it'"'"'s a "dir" with $pace/work' --bind '/clusters/it'"'"'s a "dir" with $pace/data' --bind '/clusters/it'"'"'s a "dir" with $pace/runs/demo out' --bind /scratch --bind /opt/ref:/ref:ro '/clusters/it'"'"'s a "dir" with $pace/work/images/lwroi.sif' lwroi extract '/clusters/it'"'"'s a "dir" with $pace/work/configs/demo.yaml' --set 'run.output_dir=/clusters/it'"'"'s a "dir" with $pace/runs/demo out' --set 'data.root=/clusters/it'"'"'s a "dir" with $pace/data' --set 'data.rois=[V1, '"'"'FFA'"'"']')
extract_job=${extract_job%%;*}
array_job=$(sbatch --parsable \
    '--chdir=/clusters/it'"'"'s a "dir" with $pace/work' \
    --partition=gpu \
    '--account=proj 42' \
    --qos=normal \
    '--comment=a b' \
    '--export=ALL,LWROI_MODULES=apptainer/1.3 openmpi' \
    --array=0-3%2 \
    '--output=/clusters/it'"'"'s a "dir" with $pace/runs/demo out/slurm/lwroi-fit-%A_%a.out' \
    --nodes=1 \
    --ntasks=2 \
    --cpus-per-task=4 \
    --gpus-per-task=1 \
    --time=08:00:00 \
    --signal=B:USR1@300 \
    --dependency=afterok:"$extract_job" \
    '/clusters/it'"'"'s a "dir" with $pace/slurm/lwroi-array.sbatch' \
    4 3 --mpi=pmi2 --cpus-per-task=4 --cpu-bind=cores apptainer exec --nv --env 'NOTE=x y' --bind '/clusters/it'"'"'s a "dir" with $pace/work' --bind '/clusters/it'"'"'s a "dir" with $pace/data' --bind '/clusters/it'"'"'s a "dir" with $pace/runs/demo out' --bind /scratch --bind /opt/ref:/ref:ro '/clusters/it'"'"'s a "dir" with $pace/work/images/lwroi.sif' lwroi fit '/clusters/it'"'"'s a "dir" with $pace/work/configs/demo.yaml' --set 'run.output_dir=/clusters/it'"'"'s a "dir" with $pace/runs/demo out' --set 'data.root=/clusters/it'"'"'s a "dir" with $pace/data' --set 'data.rois=[V1, '"'"'FFA'"'"']')
array_job=${array_job%%;*}
reduce_job=$(sbatch --parsable \
    '--chdir=/clusters/it'"'"'s a "dir" with $pace/work' \
    --partition=gpu \
    '--account=proj 42' \
    --qos=normal \
    '--comment=a b' \
    '--export=ALL,LWROI_MODULES=apptainer/1.3 openmpi' \
    '--output=/clusters/it'"'"'s a "dir" with $pace/runs/demo out/slurm/lwroi-reduce-%j.out' \
    --time=00:30:00 \
    --dependency=afterany:"$array_job" \
    '/clusters/it'"'"'s a "dir" with $pace/slurm/lwroi-reduce.sbatch' \
    "$array_job" apptainer exec --nv --env 'NOTE=x y' --bind '/clusters/it'"'"'s a "dir" with $pace/work' --bind '/clusters/it'"'"'s a "dir" with $pace/data' --bind '/clusters/it'"'"'s a "dir" with $pace/runs/demo out' --bind /scratch --bind /opt/ref:/ref:ro '/clusters/it'"'"'s a "dir" with $pace/work/images/lwroi.sif' lwroi summarize '/clusters/it'"'"'s a "dir" with $pace/runs/demo out')
reduce_job=${reduce_job%%;*}
echo "extract=$extract_job" "array=$array_job" "reduce=$reduce_job"
