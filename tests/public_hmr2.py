"""Reference: the public HMR 2.0 forward and CloseInt's demo preprocessing, transcribed close to
their source (boycehbz/HumanInteraction ``demo_module/hmr2``: ``models/backbones/vit.py``,
``models/components/pose_transformer.py``, ``models/heads/smpl_head.py``, ``models/hmr2.py``,
``utils/geometry.py``, ``datasets/utils.py``, ``hmr2_core.py``; the same files as
shubham-goel/4D-Humans ``hmr2/``, plus the head's ``feature``) for the fidelity tests.

Kept as the public code is written (explicit attention matmuls, the padded patch convolution,
the IEF loop, ``rot6d_to_rotmat`` on columns, numpy preprocessing). Stand-ins for libraries the
tests do not install: ``skimage.filters.gaussian`` is ``scipy.ndimage.gaussian_filter`` (what it
calls, mode 'nearest', truncate 4), ``cv2.getAffineTransform`` a 3-point solve, ``cv2.warpAffine``
an exact bilinear warp with zeros outside (cv2 quantises positions to 1/32 pixel), uint8 in ->
uint8 out; ``matrix_to_axis_angle`` scipy's rotation vector.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from scipy.spatial.transform import Rotation
from torch import nn

# --- models/backbones/vit.py -----------------------------------------------------------------


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=False):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, head_dim * num_heads * 3, bias=qkv_bias)
        self.proj = nn.Linear(head_dim * num_heads, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * self.scale
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, -1)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4., qkv_bias=False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class PatchEmbed(nn.Module):
    def __init__(self, img_size=(256, 192), patch_size=16, in_chans=3, embed_dim=768, ratio=1):
        super().__init__()
        self.num_patches = (img_size[1] // patch_size) * (img_size[0] // patch_size) * (ratio ** 2)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=(patch_size // ratio),
                              padding=4 + 2 * (ratio // 2 - 1))

    def forward(self, x):
        x = self.proj(x)
        Hp, Wp = x.shape[2], x.shape[3]
        x = x.flatten(2).transpose(1, 2)
        return x, (Hp, Wp)


class ViT(nn.Module):
    def __init__(self, img_size=(256, 192), patch_size=16, embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4,
                 qkv_bias=True):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth)])
        self.last_norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def forward(self, x):
        B, C, H, W = x.shape
        x, (Hp, Wp) = self.patch_embed(x)
        x = x + self.pos_embed[:, 1:] + self.pos_embed[:, :1]
        for blk in self.blocks:
            x = blk(x)
        x = self.last_norm(x)
        return x.permute(0, 2, 1).reshape(B, -1, Hp, Wp).contiguous()


# --- models/components/pose_transformer.py -------------------------------------------------------


class PreNorm(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x, **kwargs):
        return self.fn(self.norm(x), **kwargs)


class FeedForward(nn.Module):
    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden_dim, dim),
                                 nn.Dropout(0.0))

    def forward(self, x):
        return self.net(x)


def split_heads(t, h):  # rearrange(t, "b n (h d) -> b h n d", h=h)
    b, n, hd = t.shape
    return t.reshape(b, n, h, hd // h).permute(0, 2, 1, 3)


def merge_heads(t):  # rearrange(out, "b h n d -> b n (h d)")
    b, h, n, d = t.shape
    return t.permute(0, 2, 1, 3).reshape(b, n, h * d)


class PTAttention(nn.Module):
    def __init__(self, dim, heads=8, dim_head=64):
        super().__init__()
        inner_dim = dim_head * heads
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), nn.Dropout(0.0))

    def forward(self, x):
        q, k, v = map(lambda t: split_heads(t, self.heads), self.to_qkv(x).chunk(3, dim=-1))
        attn = (torch.matmul(q, k.transpose(-1, -2)) * self.scale).softmax(dim=-1)
        return self.to_out(merge_heads(torch.matmul(attn, v)))


class PTCrossAttention(nn.Module):
    def __init__(self, dim, context_dim=None, heads=8, dim_head=64):
        super().__init__()
        inner_dim = dim_head * heads
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.to_kv = nn.Linear(context_dim or dim, inner_dim * 2, bias=False)
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), nn.Dropout(0.0))

    def forward(self, x, context=None):
        k, v = self.to_kv(context).chunk(2, dim=-1)
        q = self.to_q(x)
        q, k, v = map(lambda t: split_heads(t, self.heads), [q, k, v])
        attn = (torch.matmul(q, k.transpose(-1, -2)) * self.scale).softmax(dim=-1)
        return self.to_out(merge_heads(torch.matmul(attn, v)))


class TransformerCrossAttn(nn.Module):
    def __init__(self, dim, depth, heads, dim_head, mlp_dim, context_dim=None):
        super().__init__()
        self.layers = nn.ModuleList([])
        for _ in range(depth):
            sa = PTAttention(dim, heads=heads, dim_head=dim_head)
            ca = PTCrossAttention(dim, context_dim=context_dim, heads=heads, dim_head=dim_head)
            ff = FeedForward(dim, mlp_dim)
            self.layers.append(nn.ModuleList([PreNorm(dim, sa), PreNorm(dim, ca), PreNorm(dim, ff)]))

    def forward(self, x, context=None):
        for self_attn, cross_attn, ff in self.layers:
            x = self_attn(x) + x
            x = cross_attn(x, context=context) + x
            x = ff(x) + x
        return x


class TransformerDecoder(nn.Module):
    def __init__(self, num_tokens, token_dim, dim, depth, heads, mlp_dim, dim_head=64, context_dim=None):
        super().__init__()
        self.to_token_embedding = nn.Linear(token_dim, dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, num_tokens, dim))
        self.transformer = TransformerCrossAttn(dim, depth, heads, dim_head, mlp_dim, context_dim=context_dim)

    def forward(self, inp, context=None):
        x = self.to_token_embedding(inp)
        b, n, _ = x.shape
        x += self.pos_embedding[:, :n]
        return self.transformer(x, context=context)


# --- utils/geometry.py, models/heads/smpl_head.py, models/hmr2.py ----------------------------------


def rot6d_to_rotmat(x):
    x = x.reshape(-1, 2, 3).permute(0, 2, 1).contiguous()
    a1 = x[:, :, 0]
    a2 = x[:, :, 1]
    b1 = F.normalize(a1)
    b2 = F.normalize(a2 - torch.einsum('bi,bi->b', b1, a2).unsqueeze(-1) * b1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)


class SMPLTransformerDecoderHead(nn.Module):
    NUM_BODY_JOINTS = 23
    IEF_ITERS = 1

    def __init__(self, decoder_args: dict):
        super().__init__()
        npose = 6 * (self.NUM_BODY_JOINTS + 1)
        self.transformer = TransformerDecoder(num_tokens=1, token_dim=1, **decoder_args)
        dim = decoder_args['dim']
        self.decpose = nn.Linear(dim, npose)
        self.decshape = nn.Linear(dim, 10)
        self.deccam = nn.Linear(dim, 3)
        self.register_buffer('init_body_pose', torch.zeros(1, npose))  # smpl_mean_params.npz in the public code
        self.register_buffer('init_betas', torch.zeros(1, 10))
        self.register_buffer('init_cam', torch.zeros(1, 3))

    def forward(self, x):
        batch_size = x.shape[0]
        x = x.flatten(2).transpose(1, 2)  # einops 'b c h w -> b (h w) c'
        pred_body_pose = self.init_body_pose.expand(batch_size, -1)
        pred_betas = self.init_betas.expand(batch_size, -1)
        pred_cam = self.init_cam.expand(batch_size, -1)
        for _ in range(self.IEF_ITERS):
            token = torch.zeros(batch_size, 1, 1).to(x.device)
            token_out = self.transformer(token, context=x).squeeze(1)
            pred_body_pose = self.decpose(token_out) + pred_body_pose
            pred_betas = self.decshape(token_out) + pred_betas
            pred_cam = self.deccam(token_out) + pred_cam
        pred_body_pose = rot6d_to_rotmat(pred_body_pose).view(batch_size, self.NUM_BODY_JOINTS + 1, 3, 3)
        pred_smpl_params = {'global_orient': pred_body_pose[:, [0]], 'body_pose': pred_body_pose[:, 1:],
                            'betas': pred_betas, 'feature': token_out}
        return pred_smpl_params, pred_cam


class HMR2(nn.Module):
    """``backbone`` and ``smpl_head`` of the LightningModule; forward_step up to pred_cam."""

    def __init__(self, vit_args: dict, decoder_args: dict):
        super().__init__()
        self.backbone = ViT(**vit_args)
        self.smpl_head = SMPLTransformerDecoderHead(decoder_args)

    def forward(self, batch):
        x = batch['img']
        conditioning_feats = self.backbone(x[:, :, :, 32:-32])
        pred_smpl_params, pred_cam = self.smpl_head(conditioning_feats)
        return {'pred_cam': pred_cam, 'pred_smpl_params': {k: v.clone() for k, v in pred_smpl_params.items()}}


# --- datasets/utils.py and hmr2_core.py: the demo's preprocessing -----------------------------------

BBOX_SHAPE = [192, 256]
IMAGE_SIZE = 256
FOCAL_LENGTH = 5000
MEAN = 255. * np.array([0.485, 0.456, 0.406])
STD = 255. * np.array([0.229, 0.224, 0.225])


def expand_to_aspect_ratio(input_shape, target_aspect_ratio=None):
    w, h = input_shape
    w_t, h_t = target_aspect_ratio
    if h / w < h_t / w_t:
        h_new = max(w * h_t / w_t, h)
        w_new = w
    else:
        h_new = h
        w_new = max(h * w_t / h_t, w)
    return np.array([w_new, h_new])


def get_affine_transform(src, dst):  # cv2.getAffineTransform: the 2 x 3 M with dst = M [src; 1]
    a = np.concatenate([src.astype(np.float64), np.ones((3, 1))], axis=1)
    return np.linalg.solve(a, dst.astype(np.float64)).T


def gen_trans_from_patch_cv(c_x, c_y, src_width, src_height, dst_width, dst_height, scale, rot):
    src_w, src_h = src_width * scale, src_height * scale
    src_center = np.array([c_x, c_y])
    assert rot == 0
    src_downdir = np.array([0, src_h * 0.5], dtype=np.float32)
    src_rightdir = np.array([src_w * 0.5, 0], dtype=np.float32)
    dst_center = np.array([dst_width * 0.5, dst_height * 0.5], dtype=np.float32)
    dst_downdir = np.array([0, dst_height * 0.5], dtype=np.float32)
    dst_rightdir = np.array([dst_width * 0.5, 0], dtype=np.float32)
    src = np.zeros((3, 2), dtype=np.float32)
    src[0, :], src[1, :], src[2, :] = src_center, src_center + src_downdir, src_center + src_rightdir
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0, :], dst[1, :], dst[2, :] = dst_center, dst_center + dst_downdir, dst_center + dst_rightdir
    return get_affine_transform(np.float32(src), np.float32(dst))


def warp_affine(img, trans, size):
    """cv2.warpAffine(img, trans, size, INTER_LINEAR, BORDER_CONSTANT, 0), positions not quantised."""
    width, height = size
    full = np.vstack([trans, [0, 0, 1]])
    inverse = np.linalg.inv(full)[:2]
    jj, ii = np.meshgrid(np.arange(width), np.arange(height))
    xs = inverse[0, 0] * jj + inverse[0, 1] * ii + inverse[0, 2]
    ys = inverse[1, 0] * jj + inverse[1, 1] * ii + inverse[1, 2]
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = (xs - x0)[..., None], (ys - y0)[..., None]
    src = img.astype(np.float64)

    def tap(y, x):
        inside = (x >= 0) & (x < img.shape[1]) & (y >= 0) & (y < img.shape[0])
        return np.where(inside[..., None], src[np.clip(y, 0, img.shape[0] - 1), np.clip(x, 0, img.shape[1] - 1)], 0.0)

    out = ((1 - fy) * ((1 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1))
           + fy * ((1 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1)))
    return np.clip(np.round(out), 0, 255).astype(np.uint8) if img.dtype == np.uint8 else out


def generate_image_patch_cv2(img, c_x, c_y, bb_width, bb_height, patch_width, patch_height, do_flip, scale, rot):
    trans = gen_trans_from_patch_cv(c_x, c_y, bb_width, bb_height, patch_width, patch_height, scale, rot)
    return warp_affine(img, trans, (int(patch_width), int(patch_height))), trans


def convert_cvimg_to_tensor(cvimg):
    return np.transpose(cvimg.copy(), (2, 0, 1)).astype(np.float32)


def prepare_human4d_data(img_cv2, boxes, BBOX_SHAPE, img_size, mean, std):
    boxes = np.array(boxes).astype(np.float32)
    centers = (boxes[:, 2:4] + boxes[:, 0:2]) / 2.0
    scales = (boxes[:, 2:4] - boxes[:, 0:2]) / 200.0
    imgs, box_center, box_sizes, img_sizes = [], [], [], []
    for idx in range(len(boxes)):
        center_x, center_y = centers[idx]
        bbox_size = expand_to_aspect_ratio(scales[idx] * 200, target_aspect_ratio=BBOX_SHAPE).max()
        cvimg = img_cv2.copy()
        downsampling_factor = ((bbox_size * 1.0) / img_size) / 2.0
        if downsampling_factor > 1.1:  # skimage gaussian(sigma, channel_axis=2, preserve_range=True)
            sigma = (downsampling_factor - 1) / 2
            cvimg = gaussian_filter(cvimg.astype(np.float64), sigma=(sigma, sigma, 0), mode='nearest', truncate=4.0)
        img_patch_cv, trans = generate_image_patch_cv2(cvimg, center_x, center_y, bbox_size, bbox_size, img_size,
                                                       img_size, False, 1.0, 0)
        img_patch = convert_cvimg_to_tensor(img_patch_cv[:, :, ::-1])
        for n_c in range(3):
            img_patch[n_c, :, :] = (img_patch[n_c, :, :] - mean[n_c]) / std[n_c]
        imgs.append(img_patch)
        box_center.append(centers[idx].copy())
        box_sizes.append(bbox_size)
        img_sizes.append(1.0 * np.array([cvimg.shape[1], cvimg.shape[0]]))
    return imgs, box_center, box_sizes, img_sizes


def bbox_from_detector(bbox, rescale=1.1):
    center = [(bbox[0] + bbox[2]) / 2.0, (bbox[1] + bbox[3]) / 2.0]
    bbox_size = max((bbox[2] - bbox[0]) * 256 / float(192), bbox[3] - bbox[1])
    return center, bbox_size / 200.0 * rescale


def cam_crop_to_full(cam_bbox, box_center, box_size, img_size, focal_length=5000.):
    img_w, img_h = img_size[:, 0], img_size[:, 1]
    cx, cy, b = box_center[:, 0], box_center[:, 1], box_size
    w_2, h_2 = img_w / 2., img_h / 2.
    bs = b * cam_bbox[:, 0] + 1e-9
    tz = 2 * focal_length / bs
    tx = (2 * (cx - w_2) / bs) + cam_bbox[:, 1]
    ty = (2 * (cy - h_2) / bs) + cam_bbox[:, 2]
    return torch.stack([tx, ty, tz], dim=-1)


@torch.no_grad()
def closeint_data(model: HMR2, img_cv2: np.ndarray, boxes: np.ndarray) -> dict:
    """Human4D_Predictor.closeint_data on one BGR frame, plus demo.py's focal length and the crops."""
    imgs, box_center, box_sizes, img_sizes = prepare_human4d_data(img_cv2, boxes, BBOX_SHAPE, IMAGE_SIZE, MEAN, STD)
    item = {'img': torch.from_numpy(np.array(imgs)), 'box_center': torch.from_numpy(np.array(box_center)),
            'box_size': torch.from_numpy(np.array(box_sizes)), 'img_size': torch.from_numpy(np.array(img_sizes))}
    centers, scales = zip(*(bbox_from_detector(box) for box in boxes))
    out = model(item)
    pred_cam = out['pred_cam']
    img_size = item['img_size'].float()
    scaled_focal_length = FOCAL_LENGTH / IMAGE_SIZE * img_size.max()
    trans = cam_crop_to_full(pred_cam, item['box_center'].float(), item['box_size'].float(), img_size, scaled_focal_length)
    params = out['pred_smpl_params']
    rotmats = torch.cat([params['global_orient'], params['body_pose']], dim=1)
    pose = Rotation.from_matrix(rotmats.reshape(-1, 3, 3).double().numpy()).as_rotvec().reshape(len(boxes), 72)
    img_h, img_w = img_cv2.shape[:2]
    return {'img': item['img'], 'pose': pose, 'rotmats': rotmats, 'betas': params['betas'], 'features': params['feature'],
            'pred_cam': pred_cam, 'trans': trans, 'centers': np.array(centers), 'scales': np.array(scales),
            'focal_length': (img_h ** 2 + img_w ** 2) ** 0.5}
