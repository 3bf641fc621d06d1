"""Class names, palettes and id tables of the standard segmentation datasets (public facts, written out as data).

Sources: the Cityscapes label table (cityscapesScripts `helpers/labels.py`), the ADE20K SceneParsing 150-class
list and the COCO-Stuff 164k 171-class train-id list in the order and colours that mmsegmentation uses, and the
Pascal VOC 2012 class list with its bit-interleaved palette. Palettes are RGB.
"""
from __future__ import annotations

from scaseg.metadata import default_palette


def _split(text: str) -> tuple[str, ...]:
    # Names are written " | "-separated and wrapped; a name may wrap across lines.
    return tuple(name.strip() for name in " ".join(text.split()).split("|"))


def _hex(text: str) -> tuple[tuple[int, int, int], ...]:
    return tuple((int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)) for c in text.split())


# Cityscapes: the 19 evaluated classes in train-id order.
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
# labelIds (0..33) -> trainIds; 255 = not evaluated (void, parking, rail track, guard rail, bridge, tunnel,
# polegroup, caravan, trailer). The license plate (id -1) never appears in the PNGs.
CITYSCAPES_ID_TO_TRAINID = (
    255, 255, 255, 255, 255, 255, 255, 0, 1, 255, 255, 2, 3, 4, 255, 255, 255,
    5, 255, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 255, 255, 16, 17, 18,
)

# Pascal VOC 2012: background + 20 object classes; 255 marks object borders and difficult regions (ignored).
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
# The VOC palette covers all 256 indices (index 255 = (224, 224, 192), the border colour).
VOC_FULL_PALETTE = tuple(default_palette(256))
VOC_PALETTE = VOC_FULL_PALETTE[: len(VOC_CLASSES)]

ADE20K_CLASSES = _split("""
wall | building | sky | floor | tree | ceiling | road | bed | windowpane | grass | cabinet |
sidewalk | person | earth | door | table | mountain | plant | curtain | chair | car | water |
painting | sofa | shelf | house | sea | mirror | rug | field | armchair | seat | fence | desk | rock
| wardrobe | lamp | bathtub | railing | cushion | base | box | column | signboard | chest of drawers
| counter | sand | sink | skyscraper | fireplace | refrigerator | grandstand | path | stairs |
runway | case | pool table | pillow | screen door | stairway | river | bridge | bookcase | blind |
coffee table | toilet | flower | book | hill | bench | countertop | stove | palm | kitchen island |
computer | swivel chair | boat | bar | arcade machine | hovel | bus | towel | light | truck | tower
| chandelier | awning | streetlight | booth | television receiver | airplane | dirt track | apparel
| pole | land | bannister | escalator | ottoman | bottle | buffet | poster | stage | van | ship |
fountain | conveyer belt | canopy | washer | plaything | swimming pool | stool | barrel | basket |
waterfall | tent | bag | minibike | cradle | oven | ball | food | step | tank | trade name |
microwave | pot | animal | bicycle | lake | dishwasher | screen | blanket | sculpture | hood |
sconce | vase | traffic light | tray | ashcan | fan | pier | crt screen | plate | monitor | bulletin
board | shower | radiator | glass | clock | flag
""")
ADE20K_PALETTE = _hex("""
787878 b47878 06e6e6 503232 04c803 787850 8c8c8c cc05ff e6e6e6 04fa07 e005ff ebff07 96053d 787846 08ff33
ff0652 8fff8c ccff04 ff3307 cc4603 0066c8 3de6fa ff0633 0b66ff ff0747 ff09e0 0907e6 dcdcdc ff095c 7009ff
08ffd6 07ffe0 ffb806 0aff47 ff290a 07ffff e0ff08 6608ff ff3d06 ffc207 ff7a08 00ff14 ff0829 ff0599 0633ff
eb0cff a09614 00a3ff 8c8c8c fa0a0f 14ff00 1fff00 ff1f00 ffe000 99ff00 0000ff ff4700 00ebff 00adff 1f00ff
0bc8c8 ff5200 00fff5 003dff 00ff70 00ff85 ff0000 ffa300 ff6600 c2ff00 008fff 33ff00 0052ff 00ff29 00ffad
0a00ff adff00 00ff99 ff5c00 ff00ff ff00f5 ff0066 ffad00 ff0014 ffb8b8 001fff 00ff3d 0047ff ff00cc 00ffc2
00ff52 000aff 0070ff 3300ff 00c2ff 007aff 00ffa3 ff9900 00ff0a ff7000 8fff00 5200ff a3ff00 ffeb00 08b8aa
8500ff 00ff5c b800ff ff001f 00b8ff 00d6ff ff0070 5cff00 00e0ff 70e0ff 46b8a0 a300ff 9900ff 47ff00 ff00a3
ffcc00 ff008f 00ffeb 85ff00 ff00eb f500ff ff007a fff500 0abed4 d6ff00 00ccff 1400ff ffff00 0099ff 0029ff
00ffcc 2900ff 29ff00 ad00ff 00f5ff 4700ff 7a00ff 00ffb8 005cff b8ff00 0085ff ffd600 19c2c2 66ff00 5c00ff
""")
COCOSTUFF_CLASSES = _split("""
person | bicycle | car | motorcycle | airplane | bus | train | truck | boat | traffic light | fire
hydrant | stop sign | parking meter | bench | bird | cat | dog | horse | sheep | cow | elephant |
bear | zebra | giraffe | backpack | umbrella | handbag | tie | suitcase | frisbee | skis | snowboard
| sports ball | kite | baseball bat | baseball glove | skateboard | surfboard | tennis racket |
bottle | wine glass | cup | fork | knife | spoon | bowl | banana | apple | sandwich | orange |
broccoli | carrot | hot dog | pizza | donut | cake | chair | couch | potted plant | bed | dining
table | toilet | tv | laptop | mouse | remote | keyboard | cell phone | microwave | oven | toaster |
sink | refrigerator | book | clock | vase | scissors | teddy bear | hair drier | toothbrush | banner
| blanket | branch | bridge | building-other | bush | cabinet | cage | cardboard | carpet |
ceiling-other | ceiling-tile | cloth | clothes | clouds | counter | cupboard | curtain | desk-stuff
| dirt | door-stuff | fence | floor-marble | floor-other | floor-stone | floor-tile | floor-wood |
flower | fog | food-other | fruit | furniture-other | grass | gravel | ground-other | hill | house |
leaves | light | mat | metal | mirror-stuff | moss | mountain | mud | napkin | net | paper |
pavement | pillow | plant-other | plastic | platform | playingfield | railing | railroad | river |
road | rock | roof | rug | salad | sand | sea | shelf | sky-other | skyscraper | snow | solid-other
| stairs | stone | straw | structural-other | table | tent | textile-other | towel | tree |
vegetable | wall-brick | wall-concrete | wall-other | wall-panel | wall-stone | wall-tile |
wall-wood | water-other | waterdrops | window-blind | window-other | wood
""")
COCOSTUFF_PALETTE = _hex("""
00c040 00c040 004060 80c0c0 004040 00c0e0 00c0c0 80c040 00c060 80c040 8020c0 0000e0 000040 00a0c0 800060
8000c0 0020c0 8080e0 0000c0 80a0c0 808000 800020 802000 800080 408020 00a000 000000 c080a0 002000 008080
4080a0 80a000 008000 c08020 806080 000080 400020 00e080 800000 c000a0 006080 808080 4000a0 80e080 808040
c00020 806000 8000c0 008020 40e000 000040 8080a0 406000 0080c0 0080a0 c0e000 008040 808020 c02080 0040c0
000020 40a080 804040 8000a0 402080 80c0c0 0000a0 c0a080 80c000 800060 c02000 804080 408060 40a000 004000
c080e0 402000 00c080 4080e0 c0a000 00c000 c08060 c06080 004080 400060 40e080 804000 c000e0 406080 80c080
4000e0 c0e080 80c040 c00060 c06000 8040c0 008060 00e000 404040 8080e0 006000 40c0c0 0080e0 80e000 40c040
808060 802080 4000c0 004060 00a080 c00040 8040e0 002080 c080c0 0040e0 80a080 c08000 804020 802040 c00080
40c020 00a040 400000 c0c0a0 002040 408080 40c0a0 80a040 408000 c0c020 8060c0 400080 404020 00e0c0 c00000
c040a0 0060c0 c08080 4040a0 80e0c0 c08040 c04020 806040 c000c0 00c020 40e040 400040 80c0a0 406040 4080c0
00c0a0 c0e040 408040 80c020 c020c0 4040c0 004020 40a0c0 c04040 8040a0 4020c0 c0c0c0 0040a0 c0a0c0 c0c000
804060 c02040 c04080 40c060 40a040 404000
""")
