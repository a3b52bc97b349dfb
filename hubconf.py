"""torch.hub entry points: `torch.hub.load('<owner>/<repo>', 'resnet50_fct_bn', pretrained=True)`, as for timm's.

Every model timm-fct registers in timm is an entry point here, with timm's arguments.
"""
import timm

import timm_fct  # noqa: F401  registers the models in timm

dependencies = ['torch', 'torchvision', 'timm', 'huggingface_hub', 'safetensors']

globals().update({name: timm.models.model_entrypoint(name)
                  for name in timm.list_models(module=['fct', 'resnet_cifar'])})
