# jettag study hh4b --scale cpu --out /work/runs_event/cpu1 --data hh4b=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4
jettag train hh4b_xattn_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=0 train.epochs=6 --run-dir /work/runs_event/cpu1/runs/xattn-s0
jettag train hh4b_xattn_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=1 train.epochs=6 --run-dir /work/runs_event/cpu1/runs/xattn-s1
jettag train hh4b_xattn_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=2 train.epochs=6 --run-dir /work/runs_event/cpu1/runs/xattn-s2
jettag train hh4b_xattn_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=0 train.epochs=6 model.overrides.use_theta=false --run-dir /work/runs_event/cpu1/runs/xattn-notheta-s0
jettag train hh4b_xattn_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=1 train.epochs=6 model.overrides.use_theta=false --run-dir /work/runs_event/cpu1/runs/xattn-notheta-s1
jettag train hh4b_xattn_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=2 train.epochs=6 model.overrides.use_theta=false --run-dir /work/runs_event/cpu1/runs/xattn-notheta-s2
jettag train hh4b_concat_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=0 train.epochs=6 --run-dir /work/runs_event/cpu1/runs/concat-s0
jettag train hh4b_concat_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=1 train.epochs=6 --run-dir /work/runs_event/cpu1/runs/concat-s1
jettag train hh4b_concat_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=2 train.epochs=6 --run-dir /work/runs_event/cpu1/runs/concat-s2
jettag train hh4b_concat_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=0 train.epochs=6 model.overrides.use_theta=false --run-dir /work/runs_event/cpu1/runs/concat-notheta-s0
jettag train hh4b_concat_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=1 train.epochs=6 model.overrides.use_theta=false --run-dir /work/runs_event/cpu1/runs/concat-notheta-s1
jettag train hh4b_concat_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=2 train.epochs=6 model.overrides.use_theta=false --run-dir /work/runs_event/cpu1/runs/concat-notheta-s2
jettag train hh4b_mixer_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=0 train.epochs=6 --run-dir /work/runs_event/cpu1/runs/mixer-s0
jettag train hh4b_mixer_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=1 train.epochs=6 --run-dir /work/runs_event/cpu1/runs/mixer-s1
jettag train hh4b_mixer_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=2 train.epochs=6 --run-dir /work/runs_event/cpu1/runs/mixer-s2
jettag train hh4b_mixer_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=0 train.epochs=6 model.overrides.use_theta=false --run-dir /work/runs_event/cpu1/runs/mixer-notheta-s0
jettag train hh4b_mixer_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=1 train.epochs=6 model.overrides.use_theta=false --run-dir /work/runs_event/cpu1/runs/mixer-notheta-s1
jettag train hh4b_mixer_event data.path=/work/cache/event/generated/hh4b-n2400-s0-none-c100-g4 train.seed=2 train.epochs=6 model.overrides.use_theta=false --run-dir /work/runs_event/cpu1/runs/mixer-notheta-s2
