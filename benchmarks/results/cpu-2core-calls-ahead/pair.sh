#!/bin/bash
# usage: pair.sh NAME EXTRA_ARGS... ; two processes, 2 cpu devices each, tiny MLP GAN floor
name=$1; shift
d=${OUT:-/tmp/calls-ahead}/$name; rm -rf $d; mkdir -p $d
port=$(python -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
for i in 0 1; do
  PYTHONPATH=${ROOT:-$PWD} JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=2 \
  GENART_COORDINATOR=127.0.0.1:$port GENART_NUM_PROCESSES=2 GENART_PROCESS_ID=$i PYTHONFAULTHANDLER=1 \
  timeout -s ABRT ${TMO:-150} python -m genart_jax.cli train --no-progress --config gan_mlp_digits \
   "--config.model.mlp_gan.g_hidden=(8,)" "--config.model.mlp_gan.d_hidden=(8,)" --config.train.batch_size=8 \
   --config.train.sample_every=0 --config.checkpoint.every_steps=0 --config.sample.num=4 \
   --workdir $d/run "$@" > $d/p$i.log 2>&1 &
done
wait
echo "$name: rc logs:"; tail -2 $d/p0.log; grep -c "Thread\|File" $d/p0.log
