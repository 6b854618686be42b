"""Fine-tune torchvision's COCO-trained FCOS on a COCO-format dataset of your own: copy this file,
set the dataset name, its classes and sizes, and run

  python -m fcos_jax.data.convert_coco --name my_data --data_dir ~/tensorflow_datasets \\
      --annotations train.json --images train/ --split train \\
      --annotations val.json --images val/ --split validation
  python -m fcos_jax.tools.import_torchvision --download fcos_resnet50_fpn --out weights/fcos_tv
  python train.py --config my_finetune.py --workdir runs/my_data

Every tensor of the COCO detector that fits is loaded; the class head (91 outputs there) keeps a
fresh init for your classes, and the log lists what was skipped.
"""

from fcos_jax.configs import coco_torchvision


def get_config():
  config = coco_torchvision.get_config()
  config.data.dataset = 'my_data'          # the --name given to convert_coco
  config.data.data_dir = None              # TFDS default (~/tensorflow_datasets)
  config.model.num_classes = 3             # your categories
  config.model.label_space = 'dataset'     # outputs indexed 0..K-1, not by COCO category id
  config.init_checkpoint = 'weights/fcos_tv'
  config.init_skip_mismatched = True       # the 91-way class head does not fit: fresh init
  config.batch_size = 8
  config.num_train_steps = 5000
  o = config.optimizer
  o.base_lr = 0.005                        # the step counts here are for batches of 8
  o.base_batch_size = 8
  o.warmup_steps = 200
  o.decay_steps = (3500, 4500)
  config.checkpoint_every = 500
  config.eval_every = 1000
  return config
